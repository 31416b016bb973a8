/*
 * fuzz_admin.c — every request message of ember.v1.Admin (and Health's) through
 * protobuf-c's generated unpack, then what ember-server's admin.c does with it.
 *
 * Input: byte 0 picks the message type (modulo the table below), the rest is
 * the message. For every type the target unpacks; where protobuf-c accepts, it
 * checks the message (protobuf_c_message_check), packs it, unpacks and packs it
 * again (the second packing must equal the first: pack ∘ unpack is the identity
 * on packed bytes), and then follows the handler as far as it goes without a
 * server:
 *
 *   - every table name through the servers' rule, ember_table_name_valid (ember/types.h);
 *   - CreateTable: the server's own TableConfig → ember_table_config mapping
 *     (server/table_config.c: defaults, then ember_table_config_validate), and
 *     for a valid config small enough for a
 *     fuzzer (dim ≤ 64, capacity ≤ 4096, growth to ≤ 8192, a small admission
 *     sketch) the table is
 *     created, pulled from and pushed to;
 *   - Evict, Clear, Export: run on a small table holding 64 rows (Export with
 *     admin.c's rows-per-message rule, scanned to the end);
 *   - ImportChunk: admin.c's import_chunk checks (row_floats, key, value, score
 *     and version lengths, --max-keys-per-request), then ember_table_import.
 *
 * Table calls on fuzzed arguments must end in OK or INVALID_ARGUMENT; a valid
 * config must create its table.
 */
#include <math.h>
#include <string.h>

#include "ember/v1/ember.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "server/registry.h"
#include "server/table_config.h"
#include "storage/table.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_MAX_KEYS 4096 /* stands in for --max-keys-per-request */
#define SMALL_DIM 4

static const ProtobufCMessageDescriptor *const kinds[] = {
    &ember__v1__create_table_request__descriptor,
    &ember__v1__drop_table_request__descriptor,
    &ember__v1__list_tables_request__descriptor,
    &ember__v1__describe_table_request__descriptor,
    &ember__v1__get_stats_request__descriptor,
    &ember__v1__save_request__descriptor,
    &ember__v1__load_request__descriptor,
    &ember__v1__evict_request__descriptor,
    &ember__v1__clear_request__descriptor,
    &ember__v1__server_info_request__descriptor,
    &ember__v1__export_request__descriptor,
    &ember__v1__import_chunk__descriptor,
    &grpc__health__v1__health_check_request__descriptor,
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

static void rc_ok(int rc, const ember_error *err, const char *call)
{
    FUZZ_CHECK(rc == EMBER_OK || rc == EMBER_INVALID_ARGUMENT, "%s returned %s: %s", call,
               ember_status_name(rc), err->message);
}

/* "" is a legal value for the fields where the server reads it as "all". */
static void name_check(const char *name)
{
    FUZZ_CHECK(name, "protobuf-c left a string NULL");
    (void)ember_table_name_valid(name, strlen(name));
}

/* A small SGD table of SMALL_DIM holding keys 1..64. */
static ember_table *small_table(void)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = SMALL_DIM;
    c.capacity = 256;
    ember_table *t = NULL;
    ember_error err;
    FUZZ_CHECK(ember_table_create(&c, NULL, &t, &err) == 0, "create: %s", err.message);
    uint64_t keys[64];
    float rows[64 * SMALL_DIM];
    for (int i = 0; i < 64; i++)
        keys[i] = (uint64_t)i + 1;
    FUZZ_CHECK(ember_table_find_or_insert(t, keys, 64, rows, NULL, NULL, &err) == 0,
               "fill: %s", err.message);
    return t;
}

static void create_table(const Ember__V1__CreateTableRequest *r)
{
    name_check(r->name);
    if (!r->config)
        return; /* the server refuses: no config */
    FUZZ_CHECK(r->config->backend, "backend NULL");
    ember_table_config c;
    ember_error err;
    int rc = srv_table_config_from_proto(r->config, &c, &err);
    rc_ok(rc, &err, "config_from_proto");
    /* Only what a fuzzer can afford to allocate a few thousand times a second. */
    if (rc || c.dim > 64 || c.capacity > 4096 || c.max_capacity > 8192 ||
        (c.admission.min_count > 1 &&
         (c.admission.sketch_width == 0 || c.admission.sketch_width > 4096)))
        return;
    ember_table *t = NULL;
    rc = ember_table_create(&c, NULL, &t, &err);
    FUZZ_CHECK(rc == 0, "a valid config (dim %u capacity %llu) was not created: %s", c.dim,
               (unsigned long long)c.capacity, err.message);
    /* A step of training on it: new keys, gradients, the rows again. */
    enum { N = 8 };
    uint64_t keys[N], scores[N];
    float *rows = malloc(N * (size_t)c.dim * sizeof(float));
    FUZZ_CHECK(rows, "out of memory");
    for (int i = 0; i < N; i++) {
        keys[i] = r->config->seed + (uint64_t)i * 977;
        scores[i] = (uint64_t)i;
    }
    const uint64_t *sc = c.score_policy == EMBER_SCORE_CUSTOM ? scores : NULL;
    rc = ember_table_find_or_insert(t, keys, N, rows, NULL, sc, &err);
    rc_ok(rc, &err, "find_or_insert");
    for (size_t i = 0; i < N * (size_t)c.dim; i++)
        rows[i] = (float)(i % 7) - 3.0f;
    rc = ember_table_apply_gradients(t, keys, N, rows, sc, &err);
    rc_ok(rc, &err, "apply_gradients");
    rc = ember_table_find(t, keys, N, rows, NULL, &err);
    rc_ok(rc, &err, "find");
    free(rows);
    ember_table_destroy(t);
}

static void evict(const Ember__V1__EvictRequest *r)
{
    name_check(r->table);
    ember_table *t = small_table();
    ember_error err;
    uint64_t evicted = 0;
    int rc = 0;
    if (r->what_case == EMBER__V1__EVICT_REQUEST__WHAT_BELOW_SCORE)
        rc = ember_table_evict_below(t, r->below_score, &evicted, &err);
    else if (r->what_case == EMBER__V1__EVICT_REQUEST__WHAT_TO_SIZE)
        rc = ember_table_evict_to_size(t, r->to_size, &evicted, &err);
    rc_ok(rc, &err, "evict");
    FUZZ_CHECK(evicted <= 64, "evicted %llu of 64", (unsigned long long)evicted);
    FUZZ_CHECK(ember_table_size(t) + evicted == 64, "size after evict");
    ember_table_destroy(t);
}

static void clear(const Ember__V1__ClearRequest *r)
{
    name_check(r->table);
    ember_table *t = small_table();
    ember_error err;
    FUZZ_CHECK(ember_table_clear(t, &err) == 0, "clear: %s", err.message);
    FUZZ_CHECK(ember_table_size(t) == 0, "clear left rows");
    ember_table_destroy(t);
}

/* admin.c's Export: rows per message as asked (default 1024), at least a bucket,
 * at most what fits a message (here: FUZZ_MAX_KEYS rows), scanned to the end. */
static void export_rows(const Ember__V1__ExportRequest *r)
{
    name_check(r->table);
    ember_table *t = small_table();
    ember_export_filter f = {r->min_score, r->after_version, r->full_rows};
    uint32_t rf = r->full_rows ? ember_table_row_floats(t) : ember_table_dim(t);
    size_t want = r->rows_per_message ? r->rows_per_message : 1024;
    if (want > FUZZ_MAX_KEYS)
        want = FUZZ_MAX_KEYS;
    if (want < EMBER_BUCKET_SLOTS)
        want = EMBER_BUCKET_SLOTS;
    uint64_t *keys = malloc(want * 8), *scores = malloc(want * 8), *versions = malloc(want * 8);
    float *rows = malloc(want * rf * sizeof(float));
    FUZZ_CHECK(keys && scores && versions && rows, "out of memory");
    uint64_t cursor = 0, end = ember_table_export_end(t), total = 0;
    while (cursor != end) {
        size_t n = 0;
        ember_error err;
        FUZZ_CHECK(ember_table_export(t, &f, &cursor, want, keys, rows, scores, versions, &n,
                                      &err) == 0,
                   "export: %s", err.message);
        FUZZ_CHECK(n <= want, "export wrote %zu rows into %zu", n, want);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(scores[i] >= r->min_score &&
                           (r->after_version == 0 || versions[i] > r->after_version),
                       "export ignored its filter");
        total += n;
    }
    FUZZ_CHECK(total <= 64, "exported %llu rows of 64", (unsigned long long)total);
    free(keys);
    free(scores);
    free(versions);
    free(rows);
    ember_table_destroy(t);
}

/* admin.c's import_chunk against a table of SMALL_DIM (SGD: row_floats = dim). */
static void import_chunk(const Ember__V1__ImportChunk *ch)
{
    name_check(ch->table);
    uint32_t rf = SMALL_DIM;
    if (ch->row_floats && ch->row_floats != rf)
        return;
    if (ch->keys.len % 8)
        return;
    size_t n = ch->keys.len / 8;
    if (n > FUZZ_MAX_KEYS || ch->values.len != n * rf * 4)
        return;
    if ((ch->scores.len && ch->scores.len != n * 8) ||
        (ch->versions.len && ch->versions.len != n * 8))
        return;
    if (!n)
        return;
    uint64_t *keys = malloc(n * 8), *scores = calloc(n, 8), *versions = calloc(n, 8);
    float *rows = malloc(n * rf * 4);
    FUZZ_CHECK(keys && scores && versions && rows, "out of memory");
    memcpy(keys, ch->keys.data, n * 8);
    memcpy(rows, ch->values.data, n * rf * 4);
    if (ch->scores.len)
        memcpy(scores, ch->scores.data, n * 8);
    if (ch->versions.len)
        memcpy(versions, ch->versions.data, n * 8);
    ember_table *t = small_table();
    ember_error err;
    int rc = ember_table_import(t, keys, n, rows, scores, versions, &err);
    rc_ok(rc, &err, "import");
    if (rc == 0) {
        /* Imported rows read back as imported (the last of equal keys wins,
         * unless a full bucket evicted it). */
        float *back = malloc(n * rf * 4);
        uint8_t *found = malloc(n);
        FUZZ_CHECK(back && found, "out of memory");
        FUZZ_CHECK(ember_table_find(t, keys, n, back, found, &err) == 0, "find: %s",
                   err.message);
        for (size_t i = 0; i < n; i++) {
            int last = 1;
            for (size_t j = i + 1; j < n && last; j++)
                last = keys[j] != keys[i];
            if (found[i] && last)
                FUZZ_CHECK(memcmp(back + i * rf, rows + i * rf, rf * 4) == 0,
                           "row %zu changed by import", i);
        }
        free(back);
        free(found);
    }
    ember_table_destroy(t);
    free(keys);
    free(scores);
    free(versions);
    free(rows);
}

static void follow(const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m)
{
    if (d == &ember__v1__create_table_request__descriptor)
        create_table((const void *)m);
    else if (d == &ember__v1__drop_table_request__descriptor)
        name_check(((const Ember__V1__DropTableRequest *)m)->name);
    else if (d == &ember__v1__describe_table_request__descriptor)
        name_check(((const Ember__V1__DescribeTableRequest *)m)->name);
    else if (d == &ember__v1__get_stats_request__descriptor)
        name_check(((const Ember__V1__GetStatsRequest *)m)->table);
    else if (d == &ember__v1__save_request__descriptor) {
        name_check(((const Ember__V1__SaveRequest *)m)->table);
        FUZZ_CHECK(((const Ember__V1__SaveRequest *)m)->dir, "dir NULL");
    } else if (d == &ember__v1__load_request__descriptor) {
        name_check(((const Ember__V1__LoadRequest *)m)->table);
        FUZZ_CHECK(((const Ember__V1__LoadRequest *)m)->dir, "dir NULL");
    } else if (d == &ember__v1__evict_request__descriptor)
        evict((const void *)m);
    else if (d == &ember__v1__clear_request__descriptor)
        clear((const void *)m);
    else if (d == &ember__v1__export_request__descriptor)
        export_rows((const void *)m);
    else if (d == &ember__v1__import_chunk__descriptor)
        import_chunk((const void *)m);
    else if (d == &grpc__health__v1__health_check_request__descriptor)
        FUZZ_CHECK(((const Grpc__Health__V1__HealthCheckRequest *)m)->service, "service NULL");
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*n ? *n : 1);
    FUZZ_CHECK(b, "out of memory");
    FUZZ_CHECK(protobuf_c_message_pack(m, b) == *n, "%s: packed size", m->descriptor->name);
    return b;
}

/* Whether m or a message inside it kept an unknown field of number 0. */
static int has_field0(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *at = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)at;
            for (size_t j = 0; j < n; j++)
                if (has_field0(v[j]))
                    return 1;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)at;
            if (sub && has_field0(sub))
                return 1;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = kinds[data[0] % NKINDS];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (!m)
        return 0; /* the server answers INVALID_ARGUMENT "malformed ..." */
    FUZZ_CHECK(protobuf_c_message_check(m), "%s: unpacked message fails its check", d->name);

    /* protobuf-c (1.4) accepts field number 0 in a tag of several bytes (its
     * one-byte path refuses it) and keeps it as an unknown field, which then packs
     * as a one-byte tag that it refuses: harmless to the server, which never packs
     * a request, but no round trip. */
    if (has_field0(m))
        goto follow;

    size_t n1, n2;
    uint8_t *p1 = pack(m, &n1);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, n1, p1);
    FUZZ_CHECK(m2, "%s: our own packing does not unpack", d->name);
    uint8_t *p2 = pack(m2, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(p1, p2, n1) == 0, "%s: pack(unpack(pack(m))) != pack(m)",
               d->name);
    protobuf_c_message_free_unpacked(m2, NULL);
    free(p1);
    free(p2);

follow:
    follow(d, m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
