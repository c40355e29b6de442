/*
 * frame.h - where a dispatch keeps its bookkeeping: what hd_handler_handle
 * needs to time a call, what forwarding needs to drop its reference, a
 * set's gather, a derived event. A caller that owns memory living as long
 * as the event (the gRPC front: the call's arena, which already holds the
 * decoded event) opens a frame scope for the event around the dispatch, and
 * every level of nesting takes its frame from that arena instead of a
 * malloc/free pair of its own. Without a scope (library callers, tests, a
 * plugin passing an event on from a thread of its own) frames come from the
 * heap, as before.
 *
 * The scope is the dispatching thread's (thread-local) and bound to the
 * event's address, like the fan-out scope (fanout.h): only the thread that
 * opened it allocates from the arena, so the arena needs no lock, and a
 * member that builds an event of its own gets heap frames for it. Frames
 * are allocated while a level starts (in handle(), before it hands the event
 * on) and read until that level completes. The arena may therefore be freed
 * once the outermost completion has run: the same lifetime the event has
 * (hd_handler_ops.handle: "`ev` stays valid until `done`").
 */
#ifndef HD_FRAME_H
#define HD_FRAME_H

#include "handlerd/handlerd.h"

#include "arena.h"

#include <stddef.h>

typedef struct hd_frame_scope hd_frame_scope;
struct hd_frame_scope {
  const hd_event *ev;
  hd_arena *arena;
  hd_frame_scope *outer; /* the thread's previous scope */
};

/* Opens the scope (on the caller's stack) for `ev` on this thread: frames
 * for `ev` come from `arena` until hd_frame_end. `arena` must outlive the
 * dispatch's outermost completion and must not be allocated from by another
 * thread meanwhile. */
void hd_frame_begin(hd_frame_scope *s, hd_arena *arena, const hd_event *ev);

/* Closes it, on the same thread, in LIFO order with hd_frame_begin. The
 * frames already handed out stay valid (they belong to the arena). */
void hd_frame_end(hd_frame_scope *s);

/* Opens a scope for `to`, an event a level builds from `from` for the
 * levels below it (a derived event) and keeps valid until their
 * completion: on the arena of this thread's scope for `from` when there is
 * one, else a scope whose frames come from the heap. Close with
 * hd_frame_end. */
void hd_frame_follow(hd_frame_scope *s, const hd_event *from,
                     const hd_event *to);

/* `size` bytes, aligned for any type, for a frame of the dispatch of `ev`:
 * from this thread's scope for `ev` when there is one (`*heap` = 0: never
 * freed), else malloc'd (`*heap` = 1: give it to hd_frame_free). NULL on
 * ENOMEM. */
void *hd_frame_alloc(const hd_event *ev, size_t size, unsigned char *heap);

/* Frees a frame that hd_frame_alloc took from the heap; a no-op for one
 * from a scope's arena. */
void hd_frame_free(void *frame, unsigned char heap);

/* How many frames this thread has taken from the heap so far (for tests:
 * a dispatch inside a scope takes none). */
unsigned long hd_frame_heap_count(void);

#endif
