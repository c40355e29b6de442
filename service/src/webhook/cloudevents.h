/*
 * CloudEvents 1.0 (https://github.com/cloudevents/spec) for webhook bodies.
 * type is "handlers.v1.<event name>", subject the topic path (omitted when
 * the event has none), datacontenttype "application/json", data the event's
 * args in the proto3 JSON mapping (hd_event_to_json).
 */
#ifndef HD_CLOUDEVENTS_H
#define HD_CLOUDEVENTS_H

#include "handlerd/handlerd.h"

#include <time.h>

typedef struct hd_ce_meta {
  const char *id;     /* unique per event, the same on every retry */
  const char *source; /* e.g. "//handlerd/<instance>/keys/<key>" */
  int64_t time_ns;    /* CLOCK_REALTIME ns of the event */
} hd_ce_meta;

/* Fills `out` with "handlers.v1.<name>" (truncated to out_size). */
void hd_ce_type(const hd_event *ev, char *out, size_t out_size);

/* Writes RFC 3339 UTC time with microseconds ("2026-11-25T15:21:14.123456Z").
 */
void hd_ce_time(int64_t time_ns, char *out, size_t out_size);

/* Structured mode: the whole event as one JSON object (content-type
 * application/cloudevents+json). malloc'd, caller frees; NULL on ENOMEM (or
 * when meta->id/source is not UTF-8: event text is repaired, meta is not).
 * "subject": topic.path for topic events, response.path for responses,
 * omitted when that is NULL/empty and for other args kinds. */
char *hd_ce_structured(const hd_event *ev, const hd_ce_meta *meta);

/* Binary mode: only the data (content-type application/json); the
 * attributes go into ce-* headers, which the caller builds from
 * hd_ce_type/hd_ce_time and `meta`. malloc'd; NULL on ENOMEM. */
char *hd_ce_binary_data(const hd_event *ev);

/* Fills `out` with a random UUIDv4 string (37 bytes incl. NUL), lowercase.
 * Thread-safe. */
void hd_ce_new_id(char out[37]);

#endif
