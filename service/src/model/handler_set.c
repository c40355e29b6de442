/*
 * handler_set.c - the "set" kind: every member handles the event and the
 * set completes once, with the members' results in insertion order (the
 * seed's HandlerSet). A member with a topic selector (registry_select.h)
 * only handles events whose topic path it selects: those members are found
 * through the set's prefix index (set_index.h) and matched outside the
 * lock, so neither the number of selectors nor a slow pattern holds up
 * other dispatches.
 *
 * Members may complete on any thread, in any order, even before their
 * handle() returns. Each gets its own slot, so completions never contend;
 * an atomic countdown decides who is last, and the last one - a member's
 * completion or handle() itself - assembles the results and completes.
 */
#include "handlerd/handlerd.h"
#include "clock.h"

#include "array.h"
#include "fanout.h"
#include "frame.h"
#include "handler_locked.h"
#include "registry_select.h"
#include "set_index.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct set {
  pthread_mutex_t lock; /* first: see handler_locked.h */
  set_entry *members;   /* insertion order; each holds a reference on its
                         * member and its selector */
  size_t count;
  size_t cap;
  uint64_t next_order;
  /* Only once a member has a selector: the members without one (copies of
   * their entries, in order) and the index of those with one. */
  set_entry *plain;
  size_t n_plain, cap_plain;
  set_index *index;
  size_t n_selected;
};
_Static_assert(offsetof(struct set, lock) == 0, "see handler_locked.h");

static const hd_handler_ops set_ops;

static struct set *set_of(hd_handler *h) {
  if (h == NULL || hd_handler_ops_of(h) != &set_ops)
    return NULL;
  return hd_handler_user_data(h);
}

/* Copies the members under the lock, taking a reference on each, so they
 * can be used unlocked. Returns the count, or (size_t)-1 when out of memory;
 * `*out` is NULL for an empty set, else a frame of the dispatch of `ev`
 * (frame.h; `ev` NULL: from the heap) to free with hd_frame_free(*out,
 * *heap). */
static size_t snapshot(struct set *s, const hd_event *ev, hd_handler ***out,
                       unsigned char *heap) {
  hd_handler **snap = NULL;
  size_t n;

  pthread_mutex_lock(&s->lock);
  n = s->count;
  if (n > 0) {
    snap = hd_frame_alloc(ev, n * sizeof(*snap), heap);
    if (snap == NULL) {
      pthread_mutex_unlock(&s->lock);
      return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++)
      snap[i] = hd_handler_ref(s->members[i].member);
  }
  pthread_mutex_unlock(&s->lock);
  *out = snap;
  return n;
}

static int by_order(const void *a, const void *b) {
  const set_entry *x = a, *y = b;
  return (x->order > y->order) - (x->order < y->order);
}

/* The members `ev` reaches, in order, referenced, as snapshot gives. The
 * candidates (the members without a selector, those the index gives for
 * the path) are taken under the lock with references; their selectors are
 * matched after it. */
static size_t select_members(struct set *s, const hd_event *ev,
                             hd_handler ***out, unsigned char *heap) {
  /* Events without a topic path reach every member. */
  const char *path = hd_event_topic_path(ev);
  set_entry *c = NULL;
  size_t n = 0, cap = 0, kept = 0;
  hd_handler **snap;

  if (path == NULL)
    return snapshot(s, ev, out, heap);
  pthread_mutex_lock(&s->lock);
  if (s->n_selected == 0) {
    pthread_mutex_unlock(&s->lock);
    return snapshot(s, ev, out, heap);
  }
  cap = s->n_plain + 16;
  c = malloc(cap * sizeof(*c));
  if (c == NULL || set_index_candidates(s->index, path, strlen(path), &c, &n,
                                        &cap) != HD_OK) {
    pthread_mutex_unlock(&s->lock);
    free(c);
    return (size_t)-1;
  }
  for (size_t i = 0; i < n; i++) {
    hd_handler_ref(c[i].member);
    hd_selector_ref(c[i].sel);
  }
  pthread_mutex_unlock(&s->lock);

  /* Matched: kept in place; then the plain members join (they were not
   * in `c` yet so that matching skips them) and all go in order. */
  for (size_t i = 0; i < n; i++) {
    if (hd_selector_matches(c[i].sel, path, strlen(path)))
      c[kept++] = c[i];
    else
      hd_handler_unref(c[i].member);
    hd_selector_unref(c[i].sel);
    c[i].sel = NULL;
  }
  n = kept;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->n_plain; i++) {
    if (n == cap) { /* cap >= n_plain + 16 unless it changed meanwhile */
      set_entry *grown = realloc(c, (cap *= 2) * sizeof(*c));
      if (grown == NULL)
        break;
      c = grown;
    }
    c[n] = s->plain[i];
    hd_handler_ref(c[n++].member);
  }
  pthread_mutex_unlock(&s->lock);
  qsort(c, n, sizeof(*c), by_order);
  kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (kept > 0 && c[kept - 1].order == c[i].order)
      hd_handler_unref(c[i].member); /* filed under two prefixes */
    else
      c[kept++] = c[i];
  }
  snap = kept ? hd_frame_alloc(ev, kept * sizeof(*snap), heap) : NULL;
  if (kept && snap == NULL) {
    for (size_t i = 0; i < kept; i++)
      hd_handler_unref(c[i].member);
    free(c);
    return (size_t)-1;
  }
  for (size_t i = 0; i < kept; i++)
    snap[i] = c[i].member;
  free(c);
  *out = snap;
  return kept;
}

/* ---- handle ------------------------------------------------------------- */

struct gather;

struct slot {
  struct gather *g;
  hd_handler *member; /* reference dropped when the member completes */
  hd_results *results;
};

struct gather {
  atomic_size_t remaining; /* members not done yet, +1 for handle() itself */
  unsigned char heap;      /* a frame of the dispatch (frame.h) */
  hd_done_fn *done;
  void *done_data;
  hd_results *out; /* allocated up front: assembling must not fail */
  char set_id[HD_HANDLER_ID_MAX + 1]; /* for log messages */
  size_t count;
  struct slot slots[];
};

/* Drops one count; the caller that drops the last assembles and completes. */
static void gather_release(struct gather *g) {
  /* acq_rel: the last thread must see every slot the others filled. */
  if (atomic_fetch_sub_explicit(&g->remaining, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < g->count; i++) {
    hd_results *rs = g->slots[i].results;
    if (rs != NULL && hd_results_take(g->out, rs) != HD_OK)
      hd_log(HD_LOG_ERROR, "set %s: out of memory: %zu results dropped",
             g->set_id, hd_results_count(rs));
    hd_results_free(rs);
  }
  /* Once done has run the dispatch's frames, `g` among them, may be gone. */
  hd_done_fn *done = g->done;
  void *done_data = g->done_data;
  hd_results *out = g->out;
  hd_frame_free(g, g->heap);
  done(out, done_data);
}

static void member_done(hd_results *results, void *data) {
  struct slot *slot = data;

  slot->results = results;
  hd_handler_unref(slot->member);
  slot->member = NULL;
  gather_release(slot->g);
}

/* A member that could not start still answers, as a failed result, so one
 * broken member does not fail its siblings. */
static void member_failed(struct slot *slot, hd_err err, int64_t start) {
  hd_handler *m = slot->member;
  hd_results *rs = hd_results_new();
  hd_result *r = rs ? hd_results_append(rs) : NULL;

  if (r == NULL) {
    hd_log(HD_LOG_ERROR, "set: handler %s failed (%s) and out of memory",
           hd_handler_id(m), hd_strerror(err));
    hd_results_free(rs);
    rs = NULL;
  } else {
    strcpy(r->handler_id, hd_handler_id(m));
    hd_result_set_error(r, err, "handler %s (%s) failed: %s", hd_handler_id(m),
                        hd_handler_kind(m), hd_strerror(err));
    r->duration_ns = mono_ns() - start;
    if (r->duration_ns <= 0)
      r->duration_ns = 1;
  }
  slot->results = rs;
  slot->member = NULL;
  hd_handler_unref(m);
}

static hd_err set_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                         void *done_data) {
  struct set *s = hd_handler_user_data(h);
  hd_handler **members;
  struct gather *g;
  unsigned char members_heap = 1, g_heap;
  size_t n = select_members(s, ev, &members, &members_heap);

  if (n == (size_t)-1)
    return HD_ENOMEM;
  if (n == 0) {
    hd_results *none = hd_results_new();
    if (none == NULL)
      return HD_ENOMEM;
    done(none, done_data);
    return HD_OK;
  }

  g = hd_frame_alloc(ev, sizeof(*g) + n * sizeof(g->slots[0]), &g_heap);
  if (g != NULL && (g->out = hd_results_new()) == NULL) {
    hd_frame_free(g, g_heap);
    g = NULL;
  }
  if (g == NULL) {
    for (size_t i = 0; i < n; i++)
      hd_handler_unref(members[i]);
    hd_frame_free(members, members_heap);
    return HD_ENOMEM;
  }
  g->heap = g_heap;
  atomic_init(&g->remaining, n + 1);
  g->done = done;
  g->done_data = done_data;
  strcpy(g->set_id, hd_handler_id(h));
  g->count = n;
  for (size_t i = 0; i < n; i++) {
    g->slots[i].g = g;
    g->slots[i].member = members[i]; /* the snapshot's reference moves here */
    g->slots[i].results = NULL;
  }
  hd_frame_free(members, members_heap);

  /* The extra count keeps `g` alive through this loop however fast the
   * members complete. A slot is not read here after its member started.
   * With two members or more, the loop is a fan-out scope (fanout.h): what
   * one member builds from the event (a CloudEvents body) the next reuses;
   * it ends, releasing the scope's share, before we return. */
  hd_fanout scope;
  if (n > 1)
    hd_fanout_begin(&scope, ev);
  for (size_t i = 0; i < n; i++) {
    struct slot *slot = &g->slots[i];
    /* Per member: a member that fails to start is timed alone, not with
     * the siblings that ran before it. */
    int64_t start = mono_ns();
    hd_err err = hd_handler_handle(slot->member, ev, member_done, slot);
    if (err != HD_OK) {
      member_failed(slot, err, start);
      gather_release(g);
    }
  }
  if (n > 1)
    hd_fanout_end(&scope);
  gather_release(g);
  return HD_OK;
}

/* ---- membership
 * -------------------------------------------------------------- */

/* Files `e` where dispatch finds it: the plain list or the index. On
 * HD_ENOMEM it is filed nowhere. Locked. */
static hd_err file_entry(struct set *s, const set_entry *e) {
  if (e->sel != NULL) {
    if (s->index == NULL && (s->index = set_index_new()) == NULL)
      return HD_ENOMEM;
    if (set_index_add(s->index, e) != HD_OK)
      return HD_ENOMEM;
    s->n_selected++;
    return HD_OK;
  }
  if (s->n_selected == 0 && s->index == NULL)
    return HD_OK; /* no selector yet: members[] is the plain list */
  if (hd_array_reserve(&s->plain, &s->cap_plain, s->n_plain, sizeof(*s->plain),
                       4) != HD_OK)
    return HD_ENOMEM;
  /* By order: a replaced member keeps its place. */
  size_t at = s->n_plain;
  while (at > 0 && s->plain[at - 1].order > e->order)
    at--;
  hd_array_open(s->plain, s->n_plain, sizeof(*s->plain), at);
  s->plain[at] = *e;
  s->n_plain++;
  return HD_OK;
}

/* Takes `e` out of the plain list or the index. Locked. */
static void unfile_entry(struct set *s, const set_entry *e) {
  if (e->sel != NULL) {
    set_index_remove(s->index, e->sel, e->order);
    s->n_selected--;
    return;
  }
  for (size_t i = 0; i < s->n_plain; i++) {
    if (s->plain[i].order == e->order) {
      hd_array_close(s->plain, s->n_plain, sizeof(*s->plain), i);
      s->n_plain--;
      return;
    }
  }
}

/* The first selector turns the plain list on: every member so far. */
static hd_err start_plain_list(struct set *s) {
  if (s->index != NULL || s->n_selected > 0)
    return HD_OK;
  s->plain = malloc((s->count + 4) * sizeof(*s->plain));
  if (s->plain == NULL)
    return HD_ENOMEM;
  s->cap_plain = s->count + 4;
  for (size_t i = 0; i < s->count; i++)
    s->plain[s->n_plain++] = s->members[i];
  if ((s->index = set_index_new()) == NULL) {
    free(s->plain);
    s->plain = NULL;
    s->n_plain = s->cap_plain = 0;
    return HD_ENOMEM;
  }
  return HD_OK;
}

hd_err hd_set_add_selected(hd_handler *set, hd_handler *member,
                           hd_selector *sel) {
  struct set *s = set_of(set);
  const char *id;
  set_entry e;

  /* A set inside itself would recurse on every event. */
  if (s == NULL || member == NULL || member == set)
    return HD_EINVAL;
  id = hd_handler_id(member);
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->count; i++) {
    if (s->members[i].member == member ||
        strcmp(hd_handler_id(s->members[i].member), id) == 0) {
      pthread_mutex_unlock(&s->lock);
      return HD_EEXIST;
    }
  }
  e = (set_entry){member, sel, s->next_order};
  if (hd_array_reserve(&s->members, &s->cap, s->count, sizeof(*s->members),
                       4) != HD_OK ||
      (sel != NULL && start_plain_list(s) != HD_OK) ||
      file_entry(s, &e) != HD_OK) {
    pthread_mutex_unlock(&s->lock);
    return HD_ENOMEM;
  }
  s->next_order++;
  hd_handler_ref(member);
  hd_selector_ref(sel);
  s->members[s->count++] = e;
  pthread_mutex_unlock(&s->lock);
  return HD_OK;
}

hd_err hd_set_add(hd_handler *set, hd_handler *member) {
  return hd_set_add_selected(set, member, NULL);
}

hd_err hd_set_replace(hd_handler *set, const char *member_id,
                      hd_handler *member, hd_selector *sel) {
  struct set *s = set_of(set);
  set_entry old, e;
  hd_err err = HD_ENOTFOUND;

  if (s == NULL || member_id == NULL || member == NULL || member == set)
    return HD_EINVAL;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->count; i++) {
    if (strcmp(hd_handler_id(s->members[i].member), member_id) != 0)
      continue;
    old = s->members[i];
    e = (set_entry){member, sel, old.order};
    err = HD_ENOMEM;
    if (sel != NULL && start_plain_list(s) != HD_OK)
      break;
    unfile_entry(s, &old);
    if (file_entry(s, &e) != HD_OK) {
      file_entry(s, &old); /* back where it was: room was there */
      break;
    }
    hd_handler_ref(member);
    hd_selector_ref(sel);
    s->members[i] = e;
    err = HD_OK;
    break;
  }
  pthread_mutex_unlock(&s->lock);
  if (err == HD_OK) { /* outside the lock: may run a destroy */
    hd_handler_unref(old.member);
    hd_selector_unref(old.sel);
  }
  return err;
}

hd_err hd_set_remove(hd_handler *set, const char *member_id) {
  struct set *s = set_of(set);
  set_entry gone = {NULL, NULL, 0};

  if (s == NULL || member_id == NULL)
    return HD_EINVAL;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->count; i++) {
    if (strcmp(hd_handler_id(s->members[i].member), member_id) == 0) {
      gone = s->members[i];
      if (s->index != NULL)
        unfile_entry(s, &gone);
      hd_array_close(s->members, s->count, sizeof(*s->members), i);
      s->count--;
      break;
    }
  }
  pthread_mutex_unlock(&s->lock);
  if (gone.member == NULL)
    return HD_ENOTFOUND;
  hd_handler_unref(gone.member); /* outside the lock: may run a destroy */
  hd_selector_unref(gone.sel);
  return HD_OK;
}

size_t hd_set_size(hd_handler *set) {
  struct set *s = set_of(set);
  size_t n;

  if (s == NULL)
    return 0;
  pthread_mutex_lock(&s->lock);
  n = s->count;
  pthread_mutex_unlock(&s->lock);
  return n;
}

void hd_set_foreach(hd_handler *set, void (*fn)(hd_handler *member, void *ud),
                    void *ud) {
  struct set *s = set_of(set);
  hd_handler **members;
  unsigned char heap = 1;
  size_t n;

  if (s == NULL || fn == NULL)
    return;
  n = snapshot(s, NULL, &members, &heap);
  if (n == (size_t)-1) {
    hd_log(HD_LOG_ERROR, "set %s: out of memory listing members",
           hd_handler_id(set));
    return;
  }
  for (size_t i = 0; i < n; i++)
    fn(members[i], ud);
  for (size_t i = 0; i < n; i++)
    hd_handler_unref(members[i]);
  hd_frame_free(members, heap);
}

/* ---- lifetime
 * ------------------------------------------------------------------ */

static void set_destroy(hd_handler *h) {
  struct set *s = hd_handler_user_data(h);

  for (size_t i = 0; i < s->count; i++) {
    hd_handler_unref(s->members[i].member);
    hd_selector_unref(s->members[i].sel);
  }
  free(s->members);
  free(s->plain);
  set_index_free(s->index);
  hd_locked_state_free(s);
}

static const hd_handler_ops set_ops = {
    .kind = "set",
    .handle = set_handle,
    .remove = hd_set_remove,
    .destroy = set_destroy,
};

hd_err hd_set_new(hd_handler **out) {
  return hd_locked_handler_new(&set_ops, sizeof(struct set), out);
}
