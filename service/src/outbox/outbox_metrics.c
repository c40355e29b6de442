/*
 * outbox_metrics.c - the outbox's figures on /metrics: the queue (by
 * state), the age of its oldest delivery, and totals since the start.
 */
#include "metrics.h"
#include "outbox.h"

#include <stddef.h>

typedef int64_t figure_fn(const hd_outbox_stats *s);

static int64_t pending(const hd_outbox_stats *s) {
  return (int64_t)(s->pending - s->in_flight);
}
static int64_t in_flight(const hd_outbox_stats *s) {
  return (int64_t)s->in_flight;
}
static int64_t oldest_s(const hd_outbox_stats *s) {
  return s->oldest_pending_ms / 1000;
}
static int64_t accepted(const hd_outbox_stats *s) {
  return (int64_t)s->accepted;
}
static int64_t attempts(const hd_outbox_stats *s) {
  return (int64_t)s->attempts;
}
static int64_t failed(const hd_outbox_stats *s) {
  return (int64_t)s->failed_attempts;
}
static int64_t succeeded(const hd_outbox_stats *s) {
  return (int64_t)s->succeeded;
}
static int64_t dead(const hd_outbox_stats *s) {
  return (int64_t)s->dead;
}
static int64_t disabled(const hd_outbox_stats *s) {
  return (int64_t)s->disabled_endpoints;
}
static int64_t commits(const hd_outbox_stats *s) {
  return (int64_t)s->commits;
}

static const struct {
  const char *name, *help;
  figure_fn *fn;
} figures[] = {
    {"handlerd_async_deliveries_waiting",
     "Async deliveries waiting for an attempt (pending or failed).", pending},
    {"handlerd_async_deliveries_in_flight",
     "Async deliveries with an attempt running.", in_flight},
    {"handlerd_async_oldest_waiting_seconds",
     "Age of the oldest unfinished async delivery.", oldest_s},
    {"handlerd_async_accepted", "Async events accepted since the start.",
     accepted},
    {"handlerd_async_attempts", "Async delivery attempts since the start.",
     attempts},
    {"handlerd_async_failed_attempts",
     "Async delivery attempts that failed, since the start.", failed},
    {"handlerd_async_succeeded",
     "Async deliveries that succeeded, since the start.", succeeded},
    {"handlerd_async_dead",
     "Async deliveries that ended dead (dead letters), since the start.", dead},
    {"handlerd_async_webhooks_disabled",
     "Async webhooks disabled after failing for --disable-after.", disabled},
    {"handlerd_async_journal_commits",
     "Journal transactions of the outbox (group commits), since the start.",
     commits},
};

#define N_FIGURES (sizeof(figures) / sizeof(figures[0]))

/* The outbox the gauges read (one per process). */
static hd_outbox *the_outbox;

/* `ud` is the figure's row. */
static int64_t gauge(void *ud) {
  figure_fn *fn = *(figure_fn *const *)ud;
  hd_outbox_stats s;

  hd_outbox_get_stats(the_outbox, fn == oldest_s, &s);
  return fn(&s);
}

void hd_outbox_set_metrics(hd_outbox *o) {
  if (o == NULL)
    return;
  the_outbox = o;
  for (size_t i = 0; i < N_FIGURES; i++)
    hd_metrics_set_gauge(figures[i].name, figures[i].help, gauge,
                         (void *)&figures[i].fn);
}
