/* tests/ref/ref_ops.c: placeholder until written. */
int ref_ops_placeholder_(void);
int ref_ops_placeholder_(void) { return 0; }
