/*
 * crc32c.h — CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of checkpoint headers, chunks and footers.
 *
 * The same CRC as iSCSI, ext4, LevelDB and RocksDB: initial value and final XOR
 * 0xFFFFFFFF, so ember_crc32c("123456789", 9) == 0xE3069283.
 *
 * On x86-64 CPUs with SSE4.2 (checked at run time) the CRC32 instruction computes
 * it, eight bytes at a time; elsewhere a slicing-by-8 table does. Both give the
 * same result for every input (tests/unit/test_crc32c.c checks them against a
 * bit-at-a-time reference).
 *
 * Thread-safety: every function may be called from many threads at once; none
 * keeps state between calls.
 */
#ifndef EMBER_CRC32C_H
#define EMBER_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC of (the bytes whose CRC is `crc`) followed by buf[len]: a CRC can be
 * computed piece by piece, ember_crc32c_extend(ember_crc32c(a, n), b, m) being
 * the CRC of a[n] then b[m]. `crc` = 0 starts a new one. buf may be NULL when
 * len is 0. */
uint32_t ember_crc32c_extend(uint32_t crc, const void *buf, size_t len);

/* The CRC of buf[len]: ember_crc32c_extend(0, buf, len). */
uint32_t ember_crc32c(const void *buf, size_t len);

/* As ember_crc32c_extend, always through the portable table path (for tests
 * and for comparing the two paths' speed). */
uint32_t ember_crc32c_extend_portable(uint32_t crc, const void *buf, size_t len);

/* 1 when ember_crc32c_extend uses the CPU's CRC32 instruction, else 0. */
int ember_crc32c_hw_available(void);

#endif /* EMBER_CRC32C_H */
