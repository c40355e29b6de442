/*
 * fanout.c - the scope of one event's fan-out (fanout.h).
 *
 * Thread-local on purpose: only the thread that opened a scope ever sees
 * it, so its slots need no lock and no atomics. A member that another
 * thread handles (a plugin passing the event on to a thread of its own
 * while handle() runs) finds no scope and simply does not share.
 */
#include "fanout.h"

#include <stddef.h>

static _Thread_local hd_fanout *current;

void hd_fanout_begin(hd_fanout *f, const hd_event *ev) {
  f->n = 0;
  f->outer = current;
  if (current != NULL && current->ev == ev) {
    f->ev = NULL; /* nested: the outer scope stays current */
    return;
  }
  f->ev = ev;
  current = f;
}

void hd_fanout_end(hd_fanout *f) {
  if (f->ev == NULL)
    return;
  current = f->outer;
  for (size_t i = 0; i < f->n; i++)
    f->slots[i].release(f->slots[i].obj);
  f->n = 0;
}

/* This thread's scope for `ev`, or NULL. The address of a live event
 * cannot be another live event's, and the scope ends before the set's
 * handle() returns, while its caller still holds the event. */
static hd_fanout *scope_of(const hd_event *ev) {
  hd_fanout *f = current;
  return f != NULL && ev != NULL && f->ev == ev ? f : NULL;
}

int hd_fanout_in_scope(const hd_event *ev) {
  hd_fanout *f = scope_of(ev);
  return f != NULL && f->n < HD_FANOUT_SLOTS;
}

void *hd_fanout_get(const hd_event *ev, const void *tag) {
  hd_fanout *f = scope_of(ev);

  if (f == NULL)
    return NULL;
  for (size_t i = 0; i < f->n; i++) {
    if (f->slots[i].tag == tag)
      return f->slots[i].obj;
  }
  return NULL;
}

int hd_fanout_put(const hd_event *ev, const void *tag, void *obj,
                  void (*release)(void *obj)) {
  hd_fanout *f = scope_of(ev);

  if (f == NULL || f->n == HD_FANOUT_SLOTS || release == NULL)
    return 0;
  f->slots[f->n].tag = tag;
  f->slots[f->n].obj = obj;
  f->slots[f->n].release = release;
  f->n++;
  return 1;
}
