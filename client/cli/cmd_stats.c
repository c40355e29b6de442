/*
 * handlerctl stats: the service's figures (GetStats, the same series as
 * /metrics) as a table for a person, or JSON.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static int run_stats(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_stats = {
    "stats", "show the service's counters and gauges",
    "usage: handlerctl stats [--all]\n"
    "\n"
    "Shows what /metrics shows (GetStats; needs the token when the server\n"
    "has one): calls, dispatches and handler results by status, webhook\n"
    "attempts, retries and outcomes, calls and deliveries in flight,\n"
    "registered handlers. Zero counters and histogram buckets are left out;\n"
    "each latency histogram is summed up as its count and the upper bounds\n"
    "of the buckets holding the median and the 99th percentile.\n"
    "\n"
    "  --all   every series, zeros and buckets included (as -o json does)\n",
    run_stats};

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* For the histogram whose _count is items[at]: the upper bound ("le") of
 * the first bucket holding the q-quantile, or NULL when it has no data. */
static const char *quantile_bound(const hc_stats *s, size_t at, double q) {
  size_t base = strlen(s->items[at].name) - strlen("_count");
  double want = q * s->items[at].value;
  if (s->items[at].value <= 0)
    return NULL;
  for (size_t i = 0; i < s->count; i++) {
    const hc_stat *b = &s->items[i];
    if (strncmp(b->name, s->items[at].name, base) == 0 &&
        strcmp(b->name + base, "_bucket") == 0 && b->value >= want)
      return strstr(b->labels, "le=\"") ? strstr(b->labels, "le=\"") + 4 : NULL;
  }
  return NULL;
}

static void add_quantile(hcli_table *t, const hc_stats *s, size_t at, double q,
                         const char *label) {
  const char *le = quantile_bound(s, at, q);
  char name[160], value[64];
  if (le == NULL)
    return;
  snprintf(name, sizeof name, "%.*s",
           (int)(strlen(s->items[at].name) - strlen("_count")),
           s->items[at].name);
  snprintf(value, sizeof value, "<= %.*s s", (int)strcspn(le, "\""), le);
  const char *row[] = {name, label, value};
  hcli_table_add(t, row);
}

static void print_table(const hc_stats *s, int all) {
  static const char *const head[] = {"FIGURE", "LABELS", "VALUE"};
  hcli_table *t = hcli_table_new(3, head);
  for (size_t i = 0; i < s->count; i++) {
    const hc_stat *x = &s->items[i];
    int counter = ends_with(x->name, "_total");
    if (!all && (ends_with(x->name, "_bucket") || (counter && x->value == 0)))
      continue;
    char value[64];
    snprintf(value, sizeof value, "%.6g", x->value);
    const char *row[] = {x->name, x->labels[0] ? x->labels : "-", value};
    hcli_table_add(t, row);
    if (!all && ends_with(x->name, "_count")) {
      add_quantile(t, s, i, 0.5, "median");
      add_quantile(t, s, i, 0.99, "p99");
    }
  }
  hcli_table_print(t, stdout);
}

static json_t *stats_json(const hc_stats *s) {
  json_t *arr = json_array();
  for (size_t i = 0; i < s->count; i++)
    json_array_append_new(
        arr, json_pack("{s:s,s:s,s:f}", "name", s->items[i].name, "labels",
                       s->items[i].labels, "value", s->items[i].value));
  return json_pack("{s:o}", "stats", arr);
}

static hc_err stats_call(hc_conn *conn, const void *in, void *out,
                         hc_status *st) {
  (void)in;
  return hc_get_stats(conn, 0, out, st);
}

static int run_stats(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"all", no_argument, NULL, 1},
                                      {0, 0, 0, 0}};
  const char *arg;
  int c, first, all = 0;
  while ((c = hcli_next_option(g, &hcli_cmd_stats, argc, argv, own, &arg,
                               &first)) != -1)
    if (c == 1)
      all = 1;
  if (first < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first]);

  hc_stats *s = NULL;
  int rc = hcli_call(g, stats_call, NULL, &s);
  if (rc != 0)
    return rc;
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(stats_json(s));
  else
    print_table(s, all);
  hc_stats_free(s);
  return HCLI_EXIT_OK;
}
