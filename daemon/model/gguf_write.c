/* daemon/model/gguf_write.c: placeholder until written. */
int gguf_write_placeholder_(void);
int gguf_write_placeholder_(void) { return 0; }
