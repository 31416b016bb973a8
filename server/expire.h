/*
 * expire.h — the TTL sweeper: one thread that, every --ttl-sweep-interval, asks
 * each table with a time to live to remove the rows past it
 * (ember_table_expire, storage/table.h). The sweep visits one bucket at a time
 * beside the calls serving the table; it logs what it removed at debug level
 * and each failure at error level.
 */
#ifndef EMBER_SRV_EXPIRE_H
#define EMBER_SRV_EXPIRE_H

#include <stddef.h>

/* Starts the sweeper; -1 with msg[cap] on failure. */
int srv_expire_start(char *msg, size_t cap);
/* Stops it and waits for a sweep in progress to end. Safe if never started. */
void srv_expire_stop(void);

#endif
