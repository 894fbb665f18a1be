/* daemon/model/model.c: placeholder until written. */
int model_placeholder_(void);
int model_placeholder_(void) { return 0; }
