# Failures found in review, each reproduced as it was reported.

test_that("a send that times out never destroys the value it was replacing", {
  local_store()
  send_object(runif(1e5), "x")
  lost <- 0
  for (i in 1:100) {
    tryCatch(send_object(runif(1e5), "x", timeout = 2e-4), yaplr_error = function(e) NULL)
    if (!does_object_exist("x", timeout = 20)) lost <- lost + 1
    expect_identical(length(retrieve_object("x", timeout = 20)), 100000L)
  }
  expect_identical(lost, 0)
})

test_that("the helper keeps none of the session's descriptors nor its directory", {
  local_store()
  out <- tempfile()
  p <- pipe(paste("cat >", shQuote(out)), "w")
  send_object(1, "starts the helper")
  pid <- server_info()$pid
  # A pipe() connection whose write end the helper inherited never ends.
  done <- callr::r(function(pid) {
    fds <- list.files(sprintf("/proc/%d/fd", pid))
    list(n = length(fds), cwd = Sys.readlink(sprintf("/proc/%d/cwd", pid)))
  }, list(pid = pid))
  expect_identical(done$cwd, "/")
  expect_lt(done$n, 12)
  close(p)
  expect_true(file.exists(out))
  unlink(out)
})

test_that("a view read by a finalizer at exit does not crash R", {
  local_store()
  send_object(runif(1e5), "big")
  res <- callr::r_safe(function(dir) {
    options(yaplr.dir = dir)
    e <- new.env()
    reg.finalizer(e, function(e) sum(e$x), onexit = TRUE)
    e$x <- yaplr::retrieve_object("big")
    TRUE
  }, list(dir = getOption("yaplr.dir")))
  expect_true(res)
})

test_that("sending a compact sequence stores it whole", {
  local_store()
  x <- 1:2e6
  send_object(x, "seq")
  expect_identical(retrieve_object("seq"), 1:2e6)
  expect_true(object_info("seq")$zero_copy)
})
