/* The expert cache's invariant checker (expert_cache_check): walks every structure of a
 * cache, O(slots + experts), and reports the first broken invariant of those listed at the
 * top of expert_cache.c. Tests call it after every operation; it never changes the cache. */
#include <errno.h>
#include <stdio.h>

#include "cache/expert_cache.h"
#include "cache/expert_cache_impl.h"

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (err && errlen)                                                                     \
                snprintf(err, errlen, __VA_ARGS__);                                                \
            return -EUCLEAN;                                                                       \
        }                                                                                          \
    } while (0)

static int check_gpu(const expert_cache_t *c, char *err, size_t errlen)
{
    uint32_t n = c->p.gpu_slots, used = 0, evictable = 0, host_loads = 0, spec_loading = 0;
    for (uint32_t s = 0; s < n; s++) {
        const struct gslot *g = &c->g[s];
        if (g->state == GS_FREE) {
            CHECK(g->key == NONE && g->pins == 0 && !g->spec, "free slot %u holds %u", s, g->key);
            continue;
        }
        used++;
        CHECK(g->key < (size_t)c->p.n_layer * c->p.n_expert && c->entries[g->key].gpu == s,
              "slot %u and its entry %u disagree", s, g->key);
        CHECK(g->state != GS_FAILED || g->pins > 0, "failed slot %u unpinned", s);
        CHECK(!g->spec || g->pins == 0, "speculative slot %u pinned", s);
        spec_loading += g->spec && g->state == GS_LOADING;
        bool ev = g->state == GS_RESIDENT && g->pins == 0;
        evictable += ev;
        CHECK(ev == (g->where != IN_NONE), "slot %u policy membership wrong", s);
        CHECK((g->where == IN_HEAP) == (g->heap_pos != NONE), "slot %u heap position", s);
        CHECK(g->where != IN_HEAP || c->p.policy == EXPERT_POLICY_LFRU, "lru slot in heap");
        if (g->state == GS_LOADING && g->src == SRC_HOST) {
            host_loads++;
            CHECK(c->entries[g->key].host != NONE, "slot %u loads from no host copy", s);
        }
    }
    CHECK(spec_loading == c->spec_loading && spec_loading <= c->p.prefetch_max,
          "%u speculative loads counted %u, at most %u", spec_loading, c->spec_loading,
          c->p.prefetch_max);
    CHECK(used == c->g_used && used <= n, "gpu used %u, counted %u of %u", c->g_used, used, n);
    uint32_t nfree = 0;
    for (uint32_t s = c->g_free; s != NONE; s = c->g[s].next) {
        CHECK(s < n && c->g[s].state == GS_FREE && ++nfree <= n, "gpu free list broken");
    }
    CHECK(nfree + used == n, "gpu free %u + used %u != %u", nfree, used, n);
    uint32_t k = 0;
    for (uint32_t s = c->g[n].next; s != n; s = c->g[s].next) {
        CHECK(s < n && ++k <= n, "lru list broken");
        CHECK(c->g[c->g[s].next].prev == s && c->g[s].where == IN_LIST, "lru links broken at %u",
              s);
    }
    CHECK(k + c->heap_n == evictable, "list %u + heap %u != %u evictable", k, c->heap_n, evictable);
    for (uint32_t i = 0; i < c->heap_n; i++) {
        CHECK(c->g[c->heap[i]].heap_pos == i, "heap position %u wrong", i);
        CHECK(i == 0 || !ec_heap_less(c, c->heap[i], c->heap[(i - 1) / 2]),
              "heap order broken at %u", i);
    }
    uint64_t busy = 0;
    for (uint32_t h = 0; h < c->p.host_slots; h++)
        busy += c->h[h].busy;
    CHECK(busy == host_loads, "host busy %llu != host loads %u", (unsigned long long)busy,
          host_loads);
    return 0;
}

static int check_host(const expert_cache_t *c, char *err, size_t errlen)
{
    uint32_t n = c->p.host_slots, used = 0, listed = 0, nfree = 0;
    for (uint32_t h = 0; h < n; h++) {
        const struct hslot *x = &c->h[h];
        if (x->key == NONE) {
            CHECK(x->busy == 0, "free host slot %u busy", h);
            continue;
        }
        used++;
        CHECK(c->entries[x->key].host == h, "host slot %u and entry disagree", h);
        listed += x->busy == 0;
    }
    CHECK(used == c->h_used && used <= n, "host used %u, counted %u of %u", c->h_used, used, n);
    for (uint32_t h = c->h_free; h != NONE; h = c->h[h].next)
        CHECK(h < n && c->h[h].key == NONE && ++nfree <= n, "host free list broken");
    CHECK(nfree + used == n, "host free %u + used %u != %u", nfree, used, n);
    uint32_t k = 0;
    for (uint32_t h = n ? c->h[n].next : n; h != n; h = c->h[h].next) {
        CHECK(h < n && ++k <= n && c->h[h].busy == 0 && c->h[h].key != NONE,
              "host lru list broken");
        CHECK(c->h[c->h[h].next].prev == h, "host lru links broken at %u", h);
    }
    CHECK(k == listed, "host lru has %u of %u", k, listed);
    return 0;
}

int expert_cache_check(const expert_cache_t *c, char *err, size_t errlen)
{
    size_t n_keys = (size_t)c->p.n_layer * c->p.n_expert;
    for (size_t k = 0; k < n_keys; k++) {
        const struct entry *en = &c->entries[k];
        CHECK(en->gpu == NONE || (en->gpu < c->p.gpu_slots && c->g[en->gpu].key == k),
              "entry %zu points at gpu slot %u", k, en->gpu);
        CHECK(en->host == NONE || (en->host < c->p.host_slots && c->h[en->host].key == k),
              "entry %zu points at host slot %u", k, en->host);
    }
    int r = check_gpu(c, err, errlen);
    return r < 0 ? r : check_host(c, err, errlen);
}
