# A short soak (about 15 s): four sessions do a random mix of send /
# overwrite / retrieve / remove / list on 50 shared tags, and count, lock and
# use a queue. The long version is `make soak` (tools/soak.R, with helper
# kills); both run run_soak() from helper-soak.R.

test_that("four sessions on 50 shared tags: no torn value, no hang, no unexpected error, nothing left", {
  skip_on_cran()
  dir <- local_store()
  res <- run_soak(dir, duration = 15, processes = 4L, n_tags = 50L)
  report <- paste(format_soak(res), collapse = "\n")
  expect_identical(res$hung, 0L, info = report)
  expect_identical(res$failed, 0L, info = report)
  expect_identical(res$bad, 0, info = report)
  expect_identical(res$unexpected, 0, info = report)
  expect_true(all(names(res$errors) == "yaplr_not_found"), info = report)
  expect_setequal(names(res$ops), c("send", "overwrite", "retrieve", "remove", "list",
                                    "count", "lock", "push", "pop"))
  expect_identical(res$counter, res$counted, info = report)
  expect_identical(res$total, res$locked, info = report)
  expect_true(res$queue_ok, info = report)
  expect_true(all(res$ops > 0), info = report)
  expect_gt(res$verified, 100)
  expect_identical(res$files_left, 0L, info = report)
  expect_identical(res$helpers_left, 0L, info = report)
  expect_true(soak_passed(res), info = report)
})

test_that("the soak's checks catch torn, truncated and misplaced values", {
  withr::local_seed(42)
  kinds <- character()
  for (i in 1:40) {
    v <- soak_value("a", 1L, i, 1e5)
    kind <- if (is.list(v)) v$meta$kind else attr(v, "soak")$kind
    kinds <- c(kinds, kind)
    expect_identical(soak_verify(v, "a"), "")
    expect_match(soak_verify(v, "b"), "the value sent under \"a\"")
    torn <- v
    if (is.list(v)) {
      p <- v$payload
      torn$payload[1] <- if (is.character(p)) "zzzzzzzz" else p[1] + 1
      cut <- v
      cut$payload <- c(p, p[1])
    } else {
      torn[1] <- if (is.raw(v)) as.raw((as.integer(v[1]) + 1L) %% 256L) else v[1] + 1
      cut <- v[-1]
      attr(cut, "soak") <- attr(v, "soak")
    }
    expect_match(soak_verify(torn, "a"), "checksum mismatch", label = kind)
    expect_match(soak_verify(cut, "a"), "elements", label = kind)
  }
  expect_setequal(kinds, c("list", "vector", "raw", "strings"))
  expect_match(soak_verify(1:3, "a"), "without its metadata")
})
