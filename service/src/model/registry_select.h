/*
 * registry_select.h - what the control plane needs from the handler model
 * beyond the public API (handlerd.h): members with a topic selector, and
 * replacing a member in place.
 *
 * A set keeps its members in insertion order. A member added with a
 * selector (selector.h) only handles events whose topic path the selector
 * selects (events without a topic path reach every member); the set finds
 * such members through an index of their selectors' literal prefixes, so
 * the cost of a dispatch grows with the path's length and the members that
 * may match, not with the number of selectors under the key.
 */
#ifndef HD_REGISTRY_SELECT_H
#define HD_REGISTRY_SELECT_H

#include "handlerd/handlerd.h"
#include "selector.h"

/* hd_set_add with a selector (NULL: every event, as hd_set_add). The set
 * takes a reference on `member` and on `sel`. */
hd_err hd_set_add_selected(hd_handler *set, hd_handler *member,
                           hd_selector *sel);

/* Replaces the member with id `member_id` by `member` (and its selector,
 * NULL: none) at the same place, atomically for dispatches: each sees the
 * old member or the new one. HD_ENOTFOUND when there is none. References
 * as hd_set_add_selected; the old member's is dropped. */
hd_err hd_set_replace(hd_handler *set, const char *member_id,
                      hd_handler *member, hd_selector *sel);

/* hd_registry_add with a selector (NULL: none). */
hd_err hd_registry_add_selected(hd_registry *reg, const char *key,
                                hd_handler *h, hd_selector *sel);

/* hd_set_replace on the set under `key`. HD_ENOKEY when the key has no
 * handler, HD_ENOTFOUND when the id is not under it. */
hd_err hd_registry_replace(hd_registry *reg, const char *key, const char *id,
                           hd_handler *h, hd_selector *sel);

/* Wraps `inner` (taking a reference) in a handler that fills an update's
 * absent old_value with the last value it saw for that topic path (absent
 * on the first update of a path), then hands the event on. It keeps one
 * value per path it has seen (a copy; removed on unsubscribe of the path).
 * Its id is `inner`'s. */
hd_err hd_derive_old_value_new(hd_handler *inner, hd_handler **out);

#endif
