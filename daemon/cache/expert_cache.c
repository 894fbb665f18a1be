/* daemon/cache/expert_cache.c: placeholder until written. */
int expert_cache_placeholder_(void);
int expert_cache_placeholder_(void) { return 0; }
