/*
 * Unit tests: the input of handlerctl's `stream` command
 * (client/cli/ndjson.c): the NDJSON reader and the failure records that
 * `-o json` prints. Linked with hcli_base (tests/CMakeLists.txt): not
 * through the tests/unit/test_*.c glob, which links hd_core only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ndjson.h"

/* ---- helpers ------------------------------------------------------------ */

/* The failures of a run as `handlerctl stream -o json` records them,
 * printing nothing. */
static void run_init(hcli_ndjson_failures *f) {
  memset(f, 0, sizeof(*f));
  f->errors = json_array();
  assert_non_null(f->errors);
}

static void run_free(hcli_ndjson_failures *f) {
  json_decref(f->errors);
}

/* A reader over `input` (`len` bytes) with default key `key`, recording its
 * failures in `f` (printing nothing): `reading r; reading_open(&r, ...);`
 * ... reading_close(&r). */
typedef struct reading {
  FILE *in;
  hcli_ndjson_failures f;
  hcli_ndjson_reader rd;
} reading;

static void reading_open(reading *r, const char *input, size_t len,
                         const char *key) {
  r->in = fmemopen((void *)input, len, "r");
  assert_non_null(r->in);
  run_init(&r->f);
  hcli_ndjson_init(&r->rd, r->in, key, &r->f);
}

static void reading_close(reading *r) {
  hcli_ndjson_free(&r->rd);
  fclose(r->in);
  run_free(&r->f);
}

/* Runs the reader over `input` (`len` bytes), default key "k"; returns the
 * events it gave, *bad_lines the lines it did not. */
static size_t read_input(hcli_ndjson_failures *f, const char *input, size_t len,
                         size_t *bad_lines) {
  FILE *in = fmemopen((void *)input, len, "r");
  hcli_ndjson_reader rd;
  hc_event ev;
  size_t events = 0;
  int got;

  assert_non_null(in);
  hcli_ndjson_init(&rd, in, "k", f);
  while ((got = hcli_ndjson_next(&rd, &ev)) >= 0)
    events += got == 1;
  *bad_lines = rd.bad_lines;
  hcli_ndjson_free(&rd);
  fclose(in);
  return events;
}

/* errors[i] of the run, which must be {"line": line, "code": code,
 * "message": <a string>}; returns the message. */
static const char *error_at(hcli_ndjson_failures *f, size_t i, size_t line,
                            const char *code) {
  json_t *e = json_array_get(f->errors, i);
  json_int_t got_line = -1;
  const char *got_code = NULL, *msg = NULL;

  assert_non_null(e);
  assert_int_equal(json_unpack(e, "{s:I, s:s, s:s}", "line", &got_line, "code",
                               &got_code, "message", &msg),
                   0);
  assert_int_equal(got_line, line);
  assert_string_equal(got_code, code);
  return msg;
}

/* ---- tests -------------------------------------------------------------- */

/* Found by fuzz_ndjson (commit 774f64c; the seed is
 * tests/fuzz/seeds/fuzz_ndjson/bad-utf8-in-error-message): a failure whose
 * message quotes bytes that are not UTF-8 was dropped from the JSON errors
 * (json_pack refused the string), so `-o json` reported fewer errors than
 * failures. It is kept, those bytes as '?'. */
static void test_failure_message_not_utf8_is_kept(void **state) {
  hcli_ndjson_failures r;

  (void)state;
  run_init(&r);
  hcli_ndjson_failed(&r, 7, "BAD_LINE", "near '\xc6\xdd' and \xff\xfe!");
  assert_int_equal(r.failed, 1);
  assert_int_equal(json_array_size(r.errors), 1);
  assert_string_equal(error_at(&r, 0, 7, "BAD_LINE"), "near '?"
                                                      "?' and ?"
                                                      "?!");
  /* Valid UTF-8 is kept as it is. */
  hcli_ndjson_failed(&r, 8, "BAD_LINE", "caf\xc3\xa9");
  assert_string_equal(error_at(&r, 1, 8, "BAD_LINE"), "caf\xc3\xa9");
  run_free(&r);
}

/* The fuzzer's input itself, through the reader: one bad line, one error
 * in the JSON document, and the document can be written. */
static void test_the_fuzzer_input_is_one_error(void **state) {
  static const char input[] =
      "{\"event\":\"update\",\"value\":\"\\u0\xc6\x9a\xc6\xdd}";
  hcli_ndjson_failures r;
  size_t bad;

  (void)state;
  run_init(&r);
  assert_int_equal(read_input(&r, input, sizeof(input) - 1, &bad), 0);
  assert_int_equal(r.failed, 1);
  assert_int_equal(bad, 1);
  assert_int_equal(json_array_size(r.errors), r.failed);
  const char *msg = error_at(&r, 0, 1, "BAD_LINE");
  assert_non_null(strstr(msg, "invalid JSON"));
  char *doc = json_dumps(r.errors, 0);
  assert_non_null(doc);
  free(doc);
  run_free(&r);
}

/* Every failure, good and bad lines mixed, has its entry, in order. */
static void test_every_failure_has_its_json_error(void **state) {
  static const char input[] =
      "{\"event\":\"update\",\"topic\":\"a\",\"value\":1}\n"
      "not json \xff\n"
      "\n"
      "{\"event\":\"x\",\"type\":\"nope\"}\n"
      "{\"event\":\"update\",\"topic\":\"\xfe\",\"value\":1}\n"
      "{\"event\":\"close\",\"topic\":\"c\"}\n"
      "{\"event\":\"update\",\"value\":\"\\u0\xc6\x9a\xc6\xdd}\n";
  hcli_ndjson_failures r;
  size_t bad;

  (void)state;
  run_init(&r);
  assert_int_equal(read_input(&r, input, sizeof(input) - 1, &bad), 2);
  assert_int_equal(r.failed, 4);
  assert_int_equal(bad, 4);
  assert_int_equal(json_array_size(r.errors), 4);
  error_at(&r, 0, 2, "BAD_LINE");
  error_at(&r, 1, 4, "BAD_LINE");
  error_at(&r, 2, 5, "BAD_LINE");
  error_at(&r, 3, 7, "BAD_LINE");
  run_free(&r);
}

/* One line's fields, as the event handlerctl sends; strings stay valid
 * until the next line is read. */
static void test_a_line_becomes_its_event(void **state) {
  static const char input[] =
      "{\"event\":\"update\",\"key\":\"prices\",\"topic\":\"a/b\","
      "\"value\":{\"x\": 1},\"old_value\":[2],\"topic_type\":\"json\","
      "\"properties\":{\"p\":\"q\"},\"reason\":2,\"code\":-7,"
      "\"description\":\"d\",\"conversation_id\":\"c\"}\n"
      "{\"event\":\"e\",\"type\":\"binary\",\"value\":\"AAEC\"}\n";
  reading r;
  hc_event ev;

  (void)state;
  reading_open(&r, input, sizeof(input) - 1, "default");
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 1);
  assert_int_equal(r.rd.line, 1);
  assert_string_equal(ev.key, "prices");
  assert_string_equal(ev.event, "update");
  assert_string_equal(ev.topic_path, "a/b");
  assert_int_equal(ev.value.type, HC_VALUE_JSON);
  assert_string_equal(ev.value.data, "{\"x\":1}");
  assert_int_equal(ev.old_value.type, HC_VALUE_JSON);
  assert_string_equal(ev.old_value.data, "[2]");
  assert_int_equal(ev.n_properties, 1);
  assert_string_equal(ev.properties[0].name, "p");
  assert_string_equal(ev.properties[0].value, "q");
  assert_int_equal(ev.reason, HC_UNSUB_REMOVAL);
  assert_int_equal(ev.error_code, -7);
  assert_string_equal(ev.error_description, "d");
  assert_string_equal(ev.conversation_id, "c");
  assert_null(ev.sender_session_id);

  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 1);
  assert_int_equal(r.rd.line, 2);
  assert_string_equal(ev.key, "default"); /* none of its own */
  assert_int_equal(ev.value.type, HC_VALUE_BINARY);
  assert_int_equal(ev.value.len, 3);
  assert_memory_equal(ev.value.data, "\x00\x01\x02", 3);

  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), -1);
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), -1);
  assert_int_equal(r.f.failed, 0);
  assert_int_equal(r.rd.bad_lines, 0);
  reading_close(&r);
}

/* Line numbers count blank lines; CR LF endings and a last line without a
 * newline are lines; without a default key a line needs its own. */
static void test_line_numbers_and_the_key(void **state) {
  static const char input[] = "\r\n"
                              "{\"event\":\"a\"}\r\n"
                              " \t \n"
                              "{\"event\":\"b\",\"key\":\"own\"}\n"
                              "{\"event\":\"c\",\"bogus\":1}\n"
                              "[1]\n"
                              "{\"event\":\"d\",\"key\":\"last\"}";
  reading r;
  hc_event ev;

  (void)state;
  reading_open(&r, input, sizeof(input) - 1, NULL);
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 0);
  assert_int_equal(r.rd.line, 2);
  assert_string_equal(error_at(&r.f, 0, 2, "BAD_LINE"),
                      "no \"key\" on this line and no --key");
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 1);
  assert_int_equal(r.rd.line, 4);
  assert_string_equal(ev.key, "own");
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 0);
  assert_string_equal(error_at(&r.f, 1, 5, "BAD_LINE"),
                      "unknown field \"bogus\"");
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 0);
  assert_string_equal(error_at(&r.f, 2, 6, "BAD_LINE"), "not a JSON object");
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), 1);
  assert_int_equal(r.rd.line, 7);
  assert_string_equal(ev.event, "d");
  assert_int_equal(hcli_ndjson_next(&r.rd, &ev), -1);
  assert_int_equal(r.rd.bad_lines, 3);
  assert_int_equal(r.f.failed, 3);
  reading_close(&r);
}

/* The first HCLI_NDJSON_MAX_PRINTED failures are printed, then one line
 * says there are more; all of them are counted and kept for JSON. */
static void test_failures_printed_up_to_the_limit(void **state) {
  hcli_ndjson_failures f;
  char *out = NULL;
  size_t out_len = 0, lines = 0;

  (void)state;
  run_init(&f);
  f.print_to = open_memstream(&out, &out_len);
  assert_non_null(f.print_to);
  for (size_t i = 1; i <= HCLI_NDJSON_MAX_PRINTED + 5; i++)
    hcli_ndjson_failed(&f, i, "NOT_FOUND", "no handler");
  fclose(f.print_to);
  for (size_t i = 0; i < out_len; i++)
    lines += out[i] == '\n';
  assert_int_equal(lines, HCLI_NDJSON_MAX_PRINTED + 1);
  assert_non_null(strstr(out, "handlerctl: line 1: NOT_FOUND: no handler\n"));
  assert_null(strstr(out, "line 21:"));
  assert_non_null(strstr(out, "handlerctl: more failures not shown\n"));
  assert_null(strchr(out, '\r')); /* no progress line to clear */
  assert_int_equal(f.failed, HCLI_NDJSON_MAX_PRINTED + 5);
  assert_int_equal(json_array_size(f.errors), HCLI_NDJSON_MAX_PRINTED + 5);
  free(out);
  run_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_failure_message_not_utf8_is_kept),
      cmocka_unit_test(test_the_fuzzer_input_is_one_error),
      cmocka_unit_test(test_every_failure_has_its_json_error),
      cmocka_unit_test(test_a_line_becomes_its_event),
      cmocka_unit_test(test_line_numbers_and_the_key),
      cmocka_unit_test(test_failures_printed_up_to_the_limit),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
