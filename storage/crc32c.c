/*
 * crc32c.c — CRC-32C: the SSE4.2 CRC32 instruction where the CPU has it, a
 * slicing-by-8 table elsewhere.
 *
 * Internally the running value is kept inverted (the "register" form); the
 * public functions invert on the way in and out so that CRCs chain.
 */
#define _GNU_SOURCE
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define EMBER_CRC32C_X86 1
#endif

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reflected */

/* ---- portable path: slicing-by-8 ------------------------------------------ */

/* t[0] is the classic byte table; t[k][b] is the CRC of byte b followed by k
 * zero bytes, so eight table lookups fold eight input bytes at once.
 *
 * Filled once under pthread_once and only read afterwards: the one static in
 * storage/, kept because no table instance owns the CRC and writing out 2,048
 * constants would hide the rule they follow. */
static struct {
    pthread_once_t once;
    uint32_t t[8][256];
} crc_tables = {PTHREAD_ONCE_INIT, {{0}}};

static void crc_tables_fill(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
        crc_tables.t[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t prev = crc_tables.t[k - 1][b];
            crc_tables.t[k][b] = (prev >> 8) ^ crc_tables.t[0][prev & 0xffu];
        }
}

static const uint32_t (*crc_tables_get(void))[256]
{
    pthread_once(&crc_tables.once, crc_tables_fill);
    return (const uint32_t (*)[256])crc_tables.t;
}

/* Little-endian load whatever the host's order; compilers make it one load. */
static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint32_t crc_sw(const uint32_t (*t)[256], uint32_t c, const uint8_t *p, size_t len)
{
    /* Byte steps up to 8-byte alignment so the wide loads below are aligned. */
    for (; len && ((uintptr_t)p & 7u); len--)
        c = t[0][(c ^ *p++) & 0xffu] ^ (c >> 8);
    for (; len >= 8; len -= 8, p += 8) {
        uint32_t lo = c ^ load_le32(p), hi = load_le32(p + 4);
        c = t[7][lo & 0xffu] ^ t[6][(lo >> 8) & 0xffu] ^ t[5][(lo >> 16) & 0xffu] ^
            t[4][lo >> 24] ^ t[3][hi & 0xffu] ^ t[2][(hi >> 8) & 0xffu] ^
            t[1][(hi >> 16) & 0xffu] ^ t[0][hi >> 24];
    }
    for (; len; len--)
        c = t[0][(c ^ *p++) & 0xffu] ^ (c >> 8);
    return c;
}

/* ---- hardware path: SSE4.2 CRC32 ------------------------------------------ */

#ifdef EMBER_CRC32C_X86
/* Compiled for SSE4.2 whatever the build's -march, and called only after the
 * run-time check, so one binary serves old and new CPUs. */
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t len)
{
    for (; len && ((uintptr_t)p & 7u); len--)
        c = _mm_crc32_u8(c, *p++);
    uint64_t c64 = c;
    for (; len >= 8; len -= 8, p += 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w); /* x86 is little-endian: the CRC's byte order */
        c64 = _mm_crc32_u64(c64, w);
    }
    c = (uint32_t)c64;
    for (; len; len--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

/* ---- public ---------------------------------------------------------------- */

int ember_crc32c_hw_available(void)
{
#ifdef EMBER_CRC32C_X86
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    return 0;
#endif
}

uint32_t ember_crc32c_extend_portable(uint32_t crc, const void *buf, size_t len)
{
    if (!len)
        return crc;
    return ~crc_sw(crc_tables_get(), ~crc, buf, len);
}

uint32_t ember_crc32c_extend(uint32_t crc, const void *buf, size_t len)
{
    if (!len)
        return crc;
#ifdef EMBER_CRC32C_X86
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc_hw(~crc, buf, len);
#endif
    return ~crc_sw(crc_tables_get(), ~crc, buf, len);
}

uint32_t ember_crc32c(const void *buf, size_t len)
{
    return ember_crc32c_extend(0, buf, len);
}
