/* Tiny assertion helpers shared by the C tests. */
#ifndef MIRAI_TEST_CHECK_H
#define MIRAI_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirai.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      char why_[512];                                                          \
      mirai_last_error(why_, sizeof why_);                                     \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, why_);                                          \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define CHECK_OK(call) CHECK((call) == MIRAI_RESULT_OK)

/* Submits a NUL-terminated string as a task. */
static inline mirai_task *submit_text(mirai_host *host, const char *text,
                                      const mirai_submit_options *opts) {
  mirai_task *task = NULL;
  CHECK_OK(mirai_host_submit(host, (const uint8_t *)text, strlen(text), opts,
                             &task));
  return task;
}

/* Waits for a task and returns its status; its result bytes go to *out (may be NULL). */
static inline mirai_status finish(mirai_task *task, mirai_bytes *out,
                                  int32_t *code) {
  mirai_status status;
  CHECK_OK(mirai_task_wait(task, 30000));
  CHECK_OK(mirai_task_status(task, &status, code));
  if (out != NULL) {
    CHECK_OK(mirai_task_take_result(task, out));
  }
  return status;
}

/* Whether bytes equal a string. */
static inline int bytes_are(const mirai_bytes *b, const char *text) {
  return b->len == strlen(text) && memcmp(b->data, text, b->len) == 0;
}

#endif
