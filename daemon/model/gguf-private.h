/* Shared by the GGUF reader (gguf.c) and writer (gguf_write.c); not part of the API. */
#pragma once
#include <stddef.h>

/* Grows *p (an array of elem-sized items with *cap slots) to hold need items, doubling from
 * 16. 0 or -ENOMEM (allocation or size overflow); *p and *cap untouched on failure. */
int gguf_grow(void **p, size_t *cap, size_t need, size_t elem);
