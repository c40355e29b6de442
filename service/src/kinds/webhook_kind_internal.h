/*
 * webhook_kind_internal.h - what the webhook kind's files share
 * (webhook_kind.c: the handler and the factory; webhook_kind_row.c: the
 * row in the kind table and the checks on a webhook's settings). Not for
 * other files.
 */
#ifndef HD_WEBHOOK_KIND_INTERNAL_H
#define HD_WEBHOOK_KIND_INTERNAL_H

#include "webhook_kind.h"

/* The custom headers: token names, none reserved (set by handlerd or
 * breaking the framing), no control characters, no name twice. How many
 * there may be is the control plane's limit, not checked here. HD_EINVAL
 * with a message naming the header; HD_ENOMEM. */
hd_err hd_wk_check_headers(const hd_webhook_spec *wh, char *msg,
                           size_t msg_size);

/* The async settings: only with async, async only with an outbox and an
 * id, the schedule and the rate within their limits. HD_EINVAL naming the
 * field. */
hd_err hd_wk_check_async(const hd_webhook_kind_ctx *ctx,
                         const hd_webhook_spec *wh, const char *id, char *msg,
                         size_t msg_size);

#endif
