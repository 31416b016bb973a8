/*
 * table_config.h — the wire's TableConfig (proto/ember/v1/ember.proto) as the
 * table's ember_table_config: defaults for an absent optimizer or initializer and
 * for hyper-parameters left at 0, then ember_table_config_validate. No gRPC here,
 * so the fuzz targets link the very code the server runs.
 */
#ifndef EMBER_SRV_TABLE_CONFIG_H
#define EMBER_SRV_TABLE_CONFIG_H

#include "ember/v1/ember.pb-c.h"
#include "storage/table.h"

/* Fills `c` from `p`; INVALID_ARGUMENT when `p` is NULL or the result does not
 * validate (the message names the field). */
int srv_table_config_from_proto(const Ember__V1__TableConfig *p, ember_table_config *c,
                                ember_error *err);

/* Whether a table of config `c` on backend `be` (NULL = CPU) fits the per-table
 * memory caps: `max_host_bytes` on its host memory (all of a CPU table; the
 * pinned rows of a hybrid GPU table), `max_hbm_bytes` on its device memory (0 =
 * no cap), as ember_table_footprint counts them: one cap per kind of memory, as
 * a pod is given them. Checked before anything is allocated. RESOURCE_EXHAUSTED naming
 * the cap (`--max-table-host-bytes`, `--max-table-hbm-bytes`) and the bytes asked;
 * INVALID_ARGUMENT on a bad config. */
int srv_table_within_caps(const ember_table_config *c, const ember_table_backend *be,
                          uint64_t max_host_bytes, uint64_t max_hbm_bytes, ember_error *err);

#endif /* EMBER_SRV_TABLE_CONFIG_H */
