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

#endif /* EMBER_SRV_TABLE_CONFIG_H */
