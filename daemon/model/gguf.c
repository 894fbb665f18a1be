/* daemon/model/gguf.c: placeholder until written. */
int gguf_placeholder_(void);
int gguf_placeholder_(void) { return 0; }
