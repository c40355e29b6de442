/*
 * stats.h - the GetStats RPC's reply: the Prometheus exposition that
 * hd_metrics_render() produces, as StatsSample messages. One renderer feeds
 * both /metrics and GetStats, so the two never disagree.
 */
#ifndef HD_STATS_H
#define HD_STATS_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "handlers/v1/handlers.pb-c.h"

/* Parses exposition `text` (as hd_metrics_render writes it: no escapes in
 * label values) into `reply`, allocating in `a`. Comment lines are skipped.
 * HD_EINVAL on a line that is not a sample, HD_ENOMEM. */
hd_err hd_stats_from_text(hd_arena *a, const char *text,
                          Handlers__V1__GetStatsReply *reply);

#endif
