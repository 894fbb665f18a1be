/* tests/ref/ref_forward.c: placeholder until written. */
int ref_forward_placeholder_(void);
int ref_forward_placeholder_(void) { return 0; }
