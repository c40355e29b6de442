#include "stats.h"

#include <stdlib.h>
#include <string.h>

typedef Handlers__V1__StatsSample sample;
typedef Handlers__V1__StatsSample__LabelsEntry label;

static char *arena_strndup(hd_arena *a, const char *s, size_t n) {
  char *p = hd_arena_alloc(a, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

static size_t count_char(const char *s, size_t n, char c) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    k += s[i] == c;
  return k;
}

/* Parses `k="v",k2="v2"` (between the braces, `n` bytes) into s->labels. */
static hd_err parse_labels(hd_arena *a, const char *p, size_t n, sample *s) {
  size_t max = count_char(p, n, '=');
  const char *end = p + n;

  s->labels = hd_arena_calloc(a, max ? max : 1, sizeof(*s->labels));
  if (!s->labels)
    return HD_ENOMEM;
  while (p < end) {
    const char *eq = memchr(p, '=', (size_t)(end - p));
    if (!eq || eq + 1 >= end || eq[1] != '"')
      return HD_EINVAL;
    const char *close = memchr(eq + 2, '"', (size_t)(end - eq - 2));
    if (!close)
      return HD_EINVAL;
    label *l = hd_arena_alloc(a, sizeof(*l));
    if (!l)
      return HD_ENOMEM;
    handlers__v1__stats_sample__labels_entry__init(l);
    l->key = arena_strndup(a, p, (size_t)(eq - p));
    l->value = arena_strndup(a, eq + 2, (size_t)(close - eq - 2));
    if (!l->key || !l->value)
      return HD_ENOMEM;
    s->labels[s->n_labels++] = l;
    p = close + 1;
    if (p < end && *p == ',')
      p++;
  }
  return HD_OK;
}

static hd_err parse_line(hd_arena *a, const char *line, size_t n, sample *s) {
  const char *space = NULL;
  for (size_t i = n; i > 0; i--)
    if (line[i - 1] == ' ') {
      space = line + i - 1;
      break;
    }
  if (!space || space == line)
    return HD_EINVAL;
  char *value_end;
  char value[64];
  size_t vlen = (size_t)(line + n - space - 1);
  if (vlen == 0 || vlen >= sizeof(value))
    return HD_EINVAL;
  memcpy(value, space + 1, vlen);
  value[vlen] = '\0';
  s->value = strtod(value, &value_end);
  if (*value_end != '\0')
    return HD_EINVAL;
  const char *brace = memchr(line, '{', (size_t)(space - line));
  const char *name_end = brace ? brace : space;
  s->name = arena_strndup(a, line, (size_t)(name_end - line));
  if (!s->name)
    return HD_ENOMEM;
  if (!brace)
    return HD_OK;
  if (space[-1] != '}')
    return HD_EINVAL;
  return parse_labels(a, brace + 1, (size_t)(space - 1 - brace - 1), s);
}

hd_err hd_stats_from_text(hd_arena *a, const char *text,
                          Handlers__V1__GetStatsReply *reply) {
  size_t lines = count_char(text, strlen(text), '\n') + 1;

  reply->samples = hd_arena_calloc(a, lines, sizeof(*reply->samples));
  if (!reply->samples)
    return HD_ENOMEM;
  reply->n_samples = 0;
  for (const char *line = text; *line;) {
    const char *nl = strchr(line, '\n');
    size_t n = nl ? (size_t)(nl - line) : strlen(line);
    if (n > 0 && line[0] != '#') {
      sample *s = hd_arena_alloc(a, sizeof(*s));
      if (!s)
        return HD_ENOMEM;
      handlers__v1__stats_sample__init(s);
      hd_err err = parse_line(a, line, n, s);
      if (err != HD_OK)
        return err;
      reply->samples[reply->n_samples++] = s;
    }
    line += n + (nl != NULL);
  }
  return HD_OK;
}
