# barrier(): n processes meet, reusable, too few time out.

test_that("a barrier releases n processes together, round after round", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  res <- parallel::mclapply(1:3, function(i) {
    vapply(1:3, function(round) {
      ok <- barrier("meet", n = 3, timeout = 30)
      send_object(Sys.time(), sprintf("t-%d-%d", round, i))
      ok
    }, logical(1))
  }, mc.cores = 3)
  expect_equal(unlist(res), rep(TRUE, 9))
})

test_that("too few arrivals time out with yaplr_timeout, and are withdrawn", {
  local_store()
  err <- expect_error(barrier("few", n = 2, timeout = 0.3), class = "yaplr_timeout")
  expect_match(conditionMessage(err), "2 processes at barrier \"few\"")
  expect_match(conditionMessage(err), "yaplr.timeout")
  # The withdrawn arrival does not count: another lone caller times out too.
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    tryCatch(yaplr::barrier("few", n = 2, timeout = 0.5), yaplr_timeout = function(e) "timeout")
  }, list(dir = getOption("yaplr.dir")))
  withr::defer(p$kill())
  p$wait(30000)
  expect_identical(p$get_result(), "timeout")
  expect_true(barrier("alone", n = 1))
})

test_that("barrier arguments are checked", {
  local_store()
  expect_error(barrier(), class = "yaplr_bad_tag")
  expect_error(barrier("b"), "`n` is missing", class = "yaplr_bad_argument")
  expect_error(barrier("b", n = 0), class = "yaplr_bad_argument")
  expect_error(barrier("b", n = 1.5), class = "yaplr_bad_argument")
  expect_error(barrier("b", n = c(1, 2)), class = "yaplr_bad_argument")
  expect_error(barrier(c("a", "b"), n = 1), "`name` must be a single", class = "yaplr_bad_tag")
  expect_error(barrier("b", n = 1, timeout = 0), class = "yaplr_bad_argument")
})

test_that("a killed waiter is withdrawn from the barrier", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    yaplr::barrier("k", n = 2, timeout = 60)
  }, list(dir = dir))
  Sys.sleep(0.5)
  p$kill()
  # Give the helper time to see the hang-up (it looks every 50 ms).
  Sys.sleep(0.3)
  expect_error(barrier("k", n = 2, timeout = 0.5), class = "yaplr_timeout")
})
