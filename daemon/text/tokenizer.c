/* daemon/text/tokenizer.c: placeholder until written. */
int tokenizer_placeholder_(void);
int tokenizer_placeholder_(void) { return 0; }
