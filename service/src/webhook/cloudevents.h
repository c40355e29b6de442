/*
 * CloudEvents 1.0 (https://github.com/cloudevents/spec) for webhook
 * deliveries, and its HTTP binding, all in one place: the body and the
 * headers of the POST in structured and binary mode. type is
 * "handlers.v1.<event name>", subject the topic path (omitted when the event
 * has none), datacontenttype "application/json", data the event's args in
 * the proto3 JSON mapping (hd_event_to_json).
 *
 * Structured mode: content-type application/cloudevents+json, the whole
 * event as one JSON object. Binary mode: content-type application/json, the
 * data as the body and the attributes in ce-specversion/id/source/type/
 * subject/time headers, percent-encoded as the HTTP binding (3.1.3.2) says.
 *
 * The id identifies the event, not the delivery: when one event reaches K
 * webhooks (a key's set, webhooks behind event-stream routes), the K
 * deliveries carry the same id and time, and those of one key the same
 * structured body, built once (webhook_kind.c, model/fanout.h). That is
 * what CloudEvents asks (source + id is unique per distinct event, so the
 * same event sent to K endpoints is the same id), and what Standard
 * Webhooks' webhook-id (= the id) is for: de-duplication at one endpoint,
 * where the same event twice is a duplicate indeed. Each dispatch is a new
 * event with a new id; a retry keeps its id.
 */
#ifndef HD_CLOUDEVENTS_H
#define HD_CLOUDEVENTS_H

#include "handlerd/handlerd.h"

#include <time.h>

typedef struct hd_ce_meta {
  const char *id;     /* unique per event: the same for the K webhooks one
                       * dispatch reaches and on every retry */
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

/* The topic path the event is about (topic.path for topic events,
 * response.path for responses), or NULL when it has none (other args kinds,
 * NULL or empty path): the subject attribute. Borrowed from `ev`. */
const char *hd_ce_subject(const hd_event *ev);

/* "//handlerd/<instance>/keys/<key>", both parts percent-encoded where a
 * URI path could not hold them: the source of every event a webhook
 * registered under `key` sends. malloc'd; NULL on ENOMEM. */
char *hd_ce_source(const char *instance, const char *key);

/* The body of the POST: hd_ce_structured or, in binary mode,
 * hd_ce_binary_data. malloc'd; NULL on ENOMEM. */
char *hd_ce_body(const hd_event *ev, const hd_ce_meta *meta, int binary_mode);

/* The "content-type: ..." header line of the mode (static). */
const char *hd_ce_content_type_line(int binary_mode);

/* Most lines hd_ce_binary_headers writes. */
#define HD_CE_BINARY_HEADERS_MAX 6

/* Binary mode's attribute headers, "ce-<name>: <value>" (values
 * percent-encoded: printable ASCII but space, '"' and '%' as is), written
 * malloc'd into `out` (room for HD_CE_BINARY_HEADERS_MAX); returns how
 * many. A line that could not be allocated is NULL (the caller checks and
 * frees them all). */
size_t hd_ce_binary_headers(const hd_event *ev, const hd_ce_meta *meta,
                            char **out);

/* Fills `out` with a random UUIDv4 string (37 bytes incl. NUL), lowercase.
 * Thread-safe. */
void hd_ce_new_id(char out[37]);

#endif
