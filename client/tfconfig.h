/*
 * tfconfig.h — the shard list in TF_CONFIG, TensorFlow's cluster spec.
 *
 * A TensorFlow parameter-server job gives every process its cluster as JSON in
 * the environment variable TF_CONFIG:
 *
 *   {"cluster": {"chief": ["w0:2222"], "worker": ["w1:2222"],
 *                "ps": ["ps0.job.svc:2222", "ps1.job.svc:2222"]},
 *    "task": {"type": "worker", "index": 0}}
 *
 * libember reads `cluster.ps` as its shard list, in order: ps task i is ember
 * shard i (so each ember-server runs with --shard-index i). Everything else in
 * the document is ignored, but the whole of it must be valid JSON (RFC 8259).
 *
 * Internal to libember (client.c's shard discovery) and its unit tests.
 * Thread-safety: pure functions of their arguments.
 */
#ifndef EMBER_CLIENT_TFCONFIG_H
#define EMBER_CLIENT_TFCONFIG_H

#include "ember/ember.h"

/* Parses the TF_CONFIG document `json` and returns its cluster.ps entries in
 * *addrs[0..*n), each a malloc'd string (free each, then the array). A document
 * without cluster.ps, or with an empty list, gives *n = 0 and *addrs = NULL: it
 * names no shards, which is not an error (TF_CONFIG also describes jobs with no
 * parameter servers). When a key repeats, its last value counts (as Python's
 * json module does).
 *
 * Returns 0, or INVALID_ARGUMENT (*n = 0) when `json` is not valid JSON, is not
 * an object, nests deeper than 64, or when cluster is not an object or
 * cluster.ps is not a list of non-empty strings (a sparse {"index": address}
 * map is refused: ember needs every shard); the message names TF_CONFIG and the
 * byte offset of the fault. RESOURCE_EXHAUSTED when out of memory. */
int ember_tfconfig_ps(const char *json, char ***addrs, unsigned *n, ember_error *err);

#endif /* EMBER_CLIENT_TFCONFIG_H */
