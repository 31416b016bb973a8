/*
 * cq_order.h — the ordering a gRPC completion queue gives, told to
 * ThreadSanitizer.
 *
 * A thread that starts a batch (grpc_call_start_batch, grpc_server_request_*)
 * with a tag, and the thread that later takes that tag from
 * grpc_completion_queue_next, are ordered by gRPC: everything written before
 * the start is visible after the completion. gRPC orders them with its own
 * atomics, and Debian's gRPC is not built with -fsanitize=thread, so TSan cannot
 * see it and reports the tag's state as raced. The two calls below state that
 * ordering on the tag; they compile to nothing outside a TSan build.
 *
 * Usage: ember_cq_release(tag) just before starting a batch with `tag`;
 * ember_cq_acquire(ev.tag) just after a completion returns it.
 */
#ifndef EMBER_PROTO_CQ_ORDER_H
#define EMBER_PROTO_CQ_ORDER_H

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
static inline void ember_cq_release(void *tag)
{
    __tsan_release(tag);
}
static inline void ember_cq_acquire(void *tag)
{
    if (tag)
        __tsan_acquire(tag);
}
#else
static inline void ember_cq_release(void *tag)
{
    (void)tag;
}
static inline void ember_cq_acquire(void *tag)
{
    (void)tag;
}
#endif

#endif /* EMBER_PROTO_CQ_ORDER_H */
