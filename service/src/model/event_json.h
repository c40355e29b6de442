/*
 * The event as a jansson object, for callers that embed it in a larger
 * document (CloudEvents) without a text round trip.
 */
#ifndef HD_EVENT_JSON_H
#define HD_EVENT_JSON_H

#include "handlerd/handlerd.h"

#include <jansson.h>

/* The object hd_event_to_json() prints; a new reference the caller
 * json_decref()s. NULL on ENOMEM. */
json_t *hd_event_json_object(const hd_event *ev);

#endif
