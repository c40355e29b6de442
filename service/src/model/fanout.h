/*
 * fanout.h - what the members of one fan-out share: a scope a set opens
 * around the loop that starts its members with one event, in which a kind
 * may leave something it built from the event (the webhook kind: the
 * CloudEvents body) for the next member of the same kind to reuse.
 *
 * The scope is the dispatching thread's (thread-local) and is bound to the
 * event's address, so nothing is added to hd_event (public plugin API) and
 * nothing relies on who calls a member from where: a member handled on
 * another thread, or with another event (a plugin that builds its own),
 * finds no scope and builds its own. Nested sets with the same event share
 * the outermost scope. What a kind puts in is released when the scope ends,
 * right after the set started its last member; objects that must live
 * longer (bodies held by queued jobs) are reference counted by their kind.
 */
#ifndef HD_FANOUT_H
#define HD_FANOUT_H

#include "handlerd/handlerd.h"

#define HD_FANOUT_SLOTS 4 /* kinds that can share at once; more just don't */

typedef struct hd_fanout hd_fanout;
struct hd_fanout {
  const hd_event *ev; /* NULL: nested in a scope of the same event */
  hd_fanout *outer;   /* the thread's previous scope (another event) */
  size_t n;
  struct {
    const void *tag; /* the address of something of the kind's own */
    void *obj;
    void (*release)(void *obj);
  } slots[HD_FANOUT_SLOTS];
};

/* Opens the scope (on the caller's stack) for `ev` on this thread. */
void hd_fanout_begin(hd_fanout *f, const hd_event *ev);

/* Closes it: releases every object put in, restores the previous scope.
 * Call on the same thread, in LIFO order with hd_fanout_begin. */
void hd_fanout_end(hd_fanout *f);

/* 1 when this thread has a scope open for `ev` (a put would be taken if a
 * slot is free), else 0. */
int hd_fanout_in_scope(const hd_event *ev);

/* What was put under `tag` in this thread's scope for `ev`, or NULL (no
 * scope for `ev` on this thread, or nothing under `tag`). */
void *hd_fanout_get(const hd_event *ev, const void *tag);

/* Leaves `obj` under `tag` in this thread's scope for `ev`, which calls
 * release(obj) when it ends. Returns 1 when taken; 0 when there is no scope
 * for `ev` on this thread, or no free slot: the caller keeps `obj`. */
int hd_fanout_put(const hd_event *ev, const void *tag, void *obj,
                  void (*release)(void *obj));

#endif
