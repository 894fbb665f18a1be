/* daemon/gpu/vkc.c: placeholder until written. */
int vkc_placeholder_(void);
int vkc_placeholder_(void) { return 0; }
