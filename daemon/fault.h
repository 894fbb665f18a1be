/* Test-only fault injection for moed (fault.c), enabled by the environment variable
 * MOED_TEST_FAULTS and by nothing else: a comma-separated list of rules
 *
 *   eio:N      every Nth read operation libmoeio hands its backend for expert data (an
 *              expert takes a few) that would succeed fails with EIO instead
 *   short:N    every Nth such read comes back with half its bytes (libmoeio continues it)
 *   enomem:N   every Nth engine step fails with ENOMEM before it runs
 *   vkmem:SIZE the Vulkan engine may allocate at most SIZE bytes of device memory (K/M/G
 *              suffixes), as on a smaller GPU
 *
 * Rules count from moed_fault_arm(), called once the weights are loaded, so a load never
 * fails by injection. The I/O rules act through libmoeio's wrapper seam (moeio-ops.h), the
 * way a bad drive would; the step rule wraps the engine behind the engine seam (engine.h).
 * docs/SECURITY.md says why this is harmless: only whoever sets the service's environment
 * (root, through the unit) can turn it on. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

struct moeio_wrapper;
typedef struct moed_fault moed_fault_t;

#define MOED_FAULT_ENV "MOED_TEST_FAULTS"

/* Parses spec (the variable's value). -EINVAL with a one-line reason for an unknown rule
 * or a count that is not a number >= 1. */
int moed_fault_new(const char *spec, moed_fault_t **ret, char *err, size_t errlen);
moed_fault_t *moed_fault_free(moed_fault_t *f);
/* The libmoeio wrapper for the engine's expert reads; NULL when no I/O rule is set. */
struct moeio_wrapper *moed_fault_io_wrapper(moed_fault_t *f);
/* Wraps *e so its steps go through the step rule; the wrapper owns the engine from then on
 * (engine_free frees both). No-op without a step rule. -ENOMEM. */
int moed_fault_wrap_engine(moed_fault_t *f, engine_t **e);
/* Device bytes the Vulkan engine may allocate (engine_vk_config_t.device_limit); 0: no
 * vkmem rule. */
uint64_t moed_fault_device_limit(const moed_fault_t *f);
/* Faults fire from now on. */
void moed_fault_arm(moed_fault_t *f);
/* Faults injected so far, all rules together. */
uint64_t moed_fault_fired(const moed_fault_t *f);
/* The spec as parsed, for the log ("eio every 7th read, ..."). */
void moed_fault_describe(const moed_fault_t *f, char *buf, size_t len);
