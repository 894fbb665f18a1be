/* iouring/moeio.c: placeholder until written. */
int moeio_placeholder_(void);
int moeio_placeholder_(void) { return 0; }
