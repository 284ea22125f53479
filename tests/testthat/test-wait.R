# wait_object(), take_object() and conditional sends, across processes.

test_that("send_object returns increasing versions and honours if_absent and if_version", {
  local_store()
  v1 <- send_object(1, "x", if_absent = TRUE)
  expect_true(is.numeric(v1) && v1 >= 1)
  expect_equal(object_info("x")$version, v1)
  err <- expect_error(send_object(2, "x", if_absent = TRUE), class = "yaplr_conflict")
  expect_match(conditionMessage(err), "required no object")
  expect_equal(err$tag, "x")
  expect_error(send_object(2, "x", if_version = v1 + 1), class = "yaplr_conflict")
  expect_identical(retrieve_object("x"), 1)
  v2 <- send_object(2, "x", if_version = v1)
  expect_gt(v2, v1)
  expect_identical(retrieve_object("x", with_version = TRUE), list(value = 2, version = v2))
  # A large value refused leaves no file behind.
  dir <- getOption("yaplr.dir")
  n <- length(list.files(dir, pattern = "[.]yobj$"))
  expect_error(send_object(runif(1e5), "x", if_version = v1), class = "yaplr_conflict")
  expect_length(list.files(dir, pattern = "[.]yobj$"), n)
  expect_error(send_object(3, "none", if_version = 1), class = "yaplr_conflict")
  expect_false(does_object_exist("none"))
})

test_that("conditional send arguments are checked", {
  local_store()
  expect_error(send_object(1, "x", if_absent = NA), class = "yaplr_bad_argument")
  expect_error(send_object(1, "x", if_version = -1), class = "yaplr_bad_argument")
  expect_error(send_object(1, "x", if_version = 1.5), class = "yaplr_bad_argument")
  expect_error(send_object(1, "x", if_version = "1"), class = "yaplr_bad_argument")
  expect_error(send_object(1, "x", if_absent = TRUE, if_version = 1),
               "not both", class = "yaplr_bad_argument")
  expect_error(retrieve_object("x", with_version = NA), class = "yaplr_bad_argument")
  expect_error(wait_object("x", after_version = "a"), class = "yaplr_bad_argument")
  expect_error(wait_object("x", timeout = -1), class = "yaplr_bad_argument")
  expect_error(wait_object(), class = "yaplr_bad_tag")
  expect_error(take_object(NA_character_), class = "yaplr_bad_tag")
})

test_that("wait_object returns at once what is there and times out with a classed error", {
  local_store()
  send_object(letters, "abc")
  expect_identical(wait_object("abc"), letters)
  got <- wait_object("abc", with_version = TRUE)
  expect_identical(got$value, letters)
  t0 <- Sys.time()
  err <- expect_error(wait_object("abc", timeout = 0.3, after_version = got$version),
                      class = "yaplr_timeout")
  expect_gte(as.numeric(Sys.time() - t0, units = "secs"), 0.25)
  expect_match(conditionMessage(err), "newer than version")
  expect_match(conditionMessage(err), "yaplr.timeout")
  expect_error(wait_object("nothing", timeout = 0.2), "nothing", class = "yaplr_timeout")
  # The session still works after a timeout.
  expect_true(does_object_exist("abc"))
})

test_that("a waiter in another process returns when the value is sent", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    yaplr::wait_object("news", timeout = 60)
  }, list(dir = dir))
  withr::defer(p$kill())
  Sys.sleep(0.3)
  expect_true(p$is_alive())
  send_object(list(a = 1), "news")
  p$wait(30000)
  expect_false(p$is_alive())
  expect_identical(p$get_result(), list(a = 1))
  # "The next value": a second waiter waits past the current version.
  v <- object_info("news")$version
  p2 <- callr::r_bg(function(dir, v) {
    options(yaplr.dir = dir)
    yaplr::wait_object("news", timeout = 60, after_version = v, with_version = TRUE)
  }, list(dir = dir, v = v))
  withr::defer(p2$kill())
  Sys.sleep(0.3)
  expect_true(p2$is_alive())
  v2 <- send_object("second", "news")
  p2$wait(30000)
  expect_identical(p2$get_result(), list(value = "second", version = v2))
})

test_that("of three takers of one value exactly one gets it", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  takers <- lapply(1:3, function(i) {
    callr::r_bg(function(dir) {
      options(yaplr.dir = dir)
      tryCatch(yaplr::take_object("prize", timeout = 3), yaplr_timeout = function(e) "none")
    }, list(dir = dir))
  })
  withr::defer(for (p in takers) p$kill())
  Sys.sleep(0.5)
  send_object("gold", "prize")
  for (p in takers) p$wait(30000)
  res <- vapply(takers, function(p) p$get_result(), "")
  expect_equal(sort(res), c("gold", "none", "none"))
  expect_false(does_object_exist("prize"))
})

test_that("take_object drains a mailbox fed with if_absent, each value exactly once", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  n <- 150L
  takers <- lapply(1:3, function(i) {
    callr::r_bg(function(dir) {
      options(yaplr.dir = dir)
      got <- list()
      repeat {
        v <- tryCatch(yaplr::take_object("box", timeout = 30), yaplr_timeout = function(e) NULL)
        if (is.null(v) || identical(v, "stop")) break
        got[[length(got) + 1L]] <- v
      }
      got
    }, list(dir = dir))
  })
  withr::defer(for (p in takers) p$kill())
  put <- function(v) {
    repeat {
      ok <- tryCatch({
        send_object(v, "box", if_absent = TRUE)
        TRUE
      }, yaplr_conflict = function(e) FALSE)
      if (ok) break
    }
  }
  for (i in seq_len(n)) put(if (i %% 10 == 0) as.numeric(rep(i, 1e5)) else i)
  for (i in 1:3) put("stop")
  for (p in takers) p$wait(60000)
  got <- unlist(lapply(takers, function(p) lapply(p$get_result(), function(v) v[[1]])))
  expect_equal(sort(got), seq_len(n))
  expect_false(does_object_exist("box"))
  expect_length(list.files(dir, pattern = "[.]yobj$"), 0L)
})

test_that("a wait goes on across a restart of the helper", {
  dir <- local_store()
  make_sure_server_is_started(quiet = TRUE)
  pid <- server_info()$pid
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    yaplr::wait_object("after-crash", timeout = 60)
  }, list(dir = dir))
  withr::defer(p$kill())
  Sys.sleep(0.5)
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid), what = "the helper to die")
  send_object("survived", "after-crash")
  p$wait(30000)
  expect_identical(p$get_result(), "survived")
})
