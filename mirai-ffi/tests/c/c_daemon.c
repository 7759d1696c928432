/* A daemon written in C, with its own evaluator, serving a host in the same program: init
 * bundle, values and errors, out-of-range statuses, cancellation through the interrupt hook,
 * maxtasks.
 * The daemon runs on a second thread here; a language binding runs it on its main thread. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

typedef struct {
  atomic_int interrupts;
  atomic_int cleanups;
  uint64_t daemon_id;
  uint32_t stream[6];
} state;

static void on_init(void *userdata, uint64_t daemon_id, const uint32_t *stream,
                    const uint8_t *blob, size_t len) {
  state *s = userdata;
  s->daemon_id = daemon_id;
  memcpy(s->stream, stream, sizeof s->stream);
  CHECK(len == 4 && memcmp(blob, "init", 4) == 0);
}

/* "sleep": waits until cancelled; "fail": an error; "bad N": returns N, no mirai_eval_status;
 * otherwise echo uppercased, the task's bytes released once read (valgrind sees any read
 * after). */
static mirai_eval_status evaluate(void *userdata, const uint8_t *data, size_t len,
                                  bool everywhere, const mirai_interrupt *intr,
                                  mirai_output *out) {
  (void)userdata;
  (void)everywhere;
  if (len == 5 && memcmp(data, "sleep", 5) == 0) {
    /* As long as it takes: a duration too long for a deadline must not fail. */
    if (mirai_interrupt_sleep(intr, UINT64_MAX)) {
      CHECK(mirai_interrupt_is_set(intr));
      return MIRAI_EVAL_STATUS_INTERRUPTED;
    }
    return MIRAI_EVAL_STATUS_VALUE;
  }
  if (len == 4 && memcmp(data, "fail", 4) == 0) {
    /* Written in pieces, as a serializer would. */
    CHECK_OK(mirai_output_write(out, (const uint8_t *)"it ", 3));
    CHECK_OK(mirai_output_write(out, (const uint8_t *)"failed", 6));
    CHECK(mirai_output_write(NULL, (const uint8_t *)"x", 1) == MIRAI_RESULT_NULL_PARAMETER);
    return MIRAI_EVAL_STATUS_ERROR;
  }
  if (len > 4 && len < 16 && memcmp(data, "bad ", 4) == 0) {
    char number[16] = {0};
    memcpy(number, data + 4, len - 4);
    CHECK_OK(mirai_output_set(out, (const uint8_t *)"ignored", 7));
    return (mirai_eval_status)atoi(number);
  }
  char upper[64];
  CHECK(len < sizeof upper);
  for (size_t i = 0; i < len; i++) {
    upper[i] = (data[i] >= 'a' && data[i] <= 'z') ? (char)(data[i] - 32) : (char)data[i];
  }
  CHECK_OK(mirai_output_release_task(out));
  CHECK_OK(mirai_output_release_task(out));
  CHECK(mirai_output_release_task(NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK_OK(mirai_output_set(out, (const uint8_t *)upper, len));
  return MIRAI_EVAL_STATUS_VALUE;
}

static void on_cleanup(void *userdata) {
  atomic_fetch_add(&((state *)userdata)->cleanups, 1);
}

/* Runs on the daemon's I/O thread when the running task is cancelled. */
static void on_interrupt(void *userdata) {
  atomic_fetch_add(&((state *)userdata)->interrupts, 1);
}

typedef struct {
  const char *url;
  const char *secret_hex;
  uint64_t maxtasks;
  state st;
  int exit_code;
  mirai_result result;
} daemon_args;

static void *daemon_main(void *arg) {
  daemon_args *a = arg;
  mirai_daemon_options *opts = mirai_daemon_options_new();
  CHECK(opts != NULL);
  CHECK_OK(mirai_daemon_options_set_secret_hex(opts, a->secret_hex));
  if (a->maxtasks > 0) CHECK_OK(mirai_daemon_options_set_maxtasks(opts, a->maxtasks));
  CHECK_OK(mirai_daemon_options_set_label(opts, "c_daemon test"));
  mirai_evaluator ev = {.userdata = &a->st,
                        .init = on_init,
                        .evaluate = evaluate,
                        .cleanup = on_cleanup,
                        .interrupt = on_interrupt};
  a->result = mirai_daemon_run(a->url, opts, &ev, &a->exit_code);
  mirai_daemon_options_free(opts);
  return NULL;
}

static mirai_host *host_with_blob(void) {
  mirai_host_options *o = mirai_host_options_new();
  CHECK(o != NULL);
  CHECK_OK(mirai_host_options_set_init_blob(o, (const uint8_t *)"init", 4));
  uint32_t stream[6];
  for (int i = 0; i < 6; i++) stream[i] = (uint32_t)(i + 1);
  CHECK_OK(mirai_host_options_set_stream(o, stream));
  mirai_host *host = NULL;
  CHECK_OK(mirai_host_listen("tcp://127.0.0.1:0", o, &host));
  mirai_host_options_free(o);
  return host;
}

int main(void) {
  mirai_host *host = host_with_blob();
  daemon_args a = {.url = mirai_host_url(host), .secret_hex = mirai_host_secret_hex(host)};
  CHECK(a.secret_hex != NULL && strlen(a.secret_hex) == 64);
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, daemon_main, &a) == 0);
  CHECK_OK(mirai_host_wait_connections(host, 1, 30000));

  /* A payload built in a libmirai buffer is submitted without a copy. */
  mirai_buffer *buf = mirai_buffer_new(2);
  CHECK(buf != NULL);
  CHECK_OK(mirai_buffer_write(buf, (const uint8_t *)"hel", 3));
  CHECK_OK(mirai_buffer_write(buf, (const uint8_t *)"lo", 2));
  CHECK(mirai_buffer_len(buf) == 5 && mirai_buffer_len(NULL) == 0);
  CHECK(mirai_buffer_write(NULL, (const uint8_t *)"x", 1) == MIRAI_RESULT_NULL_PARAMETER);
  mirai_buffer_free(NULL);
  mirai_task *t = NULL;
  CHECK(mirai_host_submit_buffer(host, NULL, NULL, &t) == MIRAI_RESULT_NULL_PARAMETER && t == NULL);
  CHECK_OK(mirai_host_submit_buffer(host, buf, NULL, &t));
  mirai_bytes out;
  CHECK(finish(t, &out, NULL) == MIRAI_STATUS_VALUE && bytes_are(&out, "HELLO"));
  mirai_bytes_free(&out);
  mirai_task_free(t);
  CHECK(a.st.daemon_id == 1);
  CHECK(a.st.stream[0] != 1); /* jumped once from the host's base stream */

  t = submit_text(host, "fail", NULL);
  CHECK(finish(t, &out, NULL) == MIRAI_STATUS_ERROR && bytes_are(&out, "it failed"));
  mirai_bytes_free(&out);
  mirai_task_free(t);

  /* Cancel a running task: the hook fires on the daemon, the host resolves 20 at once. */
  t = submit_text(host, "sleep", NULL);
  mirai_counters c;
  do {
    CHECK_OK(mirai_host_counters(host, &c));
  } while (c.executing == 0);
  CHECK(mirai_task_cancel(t));
  int32_t code = 0;
  CHECK(finish(t, NULL, &code) == MIRAI_STATUS_FAILED && code == 20);
  mirai_task_free(t);
  t = submit_text(host, "again", NULL);
  CHECK(finish(t, &out, NULL) == MIRAI_STATUS_VALUE && bytes_are(&out, "AGAIN"));
  mirai_bytes_free(&out);
  mirai_task_free(t);
  CHECK(atomic_load(&a.st.interrupts) == 1);
  /* The daemon cleans up after sending a result, so the last cleanup may still be running. */
  for (int i = 0; i < 5000 && atomic_load(&a.st.cleanups) < 4; i++) {
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  }
  CHECK(atomic_load(&a.st.cleanups) == 4);

  /* An evaluator returning a value outside mirai_eval_status gives an error result that says
   * so, never undefined behaviour; the daemon goes on. */
  const char *bad[] = {"bad 3", "bad -1"};
  const char *why[] = {"the evaluator returned 3, which is not a mirai_eval_status",
                       "the evaluator returned -1, which is not a mirai_eval_status"};
  for (int i = 0; i < 2; i++) {
    t = submit_text(host, bad[i], NULL);
    CHECK(finish(t, &out, NULL) == MIRAI_STATUS_ERROR && bytes_are(&out, why[i]));
    mirai_bytes_free(&out);
    mirai_task_free(t);
  }
  t = submit_text(host, "still here", NULL);
  CHECK(finish(t, &out, NULL) == MIRAI_STATUS_VALUE && bytes_are(&out, "STILL HERE"));
  mirai_bytes_free(&out);
  mirai_task_free(t);

  /* Closing the host ends the daemon with exit code 0. */
  mirai_host_free(host);
  CHECK(pthread_join(thread, NULL) == 0);
  CHECK(a.result == MIRAI_RESULT_OK && a.exit_code == 0);

  /* maxtasks: the daemon retires after two tasks with exit code 3. */
  host = host_with_blob();
  daemon_args b = {.url = mirai_host_url(host), .secret_hex = mirai_host_secret_hex(host), .maxtasks = 2};
  CHECK(pthread_create(&thread, NULL, daemon_main, &b) == 0);
  for (int i = 0; i < 2; i++) {
    t = submit_text(host, "x", NULL);
    CHECK(finish(t, NULL, NULL) == MIRAI_STATUS_VALUE);
    mirai_task_free(t);
  }
  CHECK(pthread_join(thread, NULL) == 0);
  CHECK(b.result == MIRAI_RESULT_OK && b.exit_code == 3);
  mirai_host_free(host);

  /* A wrong secret is refused with a clear code. */
  host = host_with_blob();
  daemon_args w = {.url = mirai_host_url(host),
                   .secret_hex = "00000000000000000000000000000000"};
  daemon_main(&w);
  CHECK(w.result == MIRAI_RESULT_AUTHENTICATION_FAILED);
  mirai_host_free(host);

  puts("c_daemon: ok");
  return 0;
}
