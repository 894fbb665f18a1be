/* daemon/model/arch.c: placeholder until written. */
int arch_placeholder_(void);
int arch_placeholder_(void) { return 0; }
