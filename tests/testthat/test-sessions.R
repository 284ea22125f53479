test_that("an object outlives the session that sent it", {
  local_store()
  in_session(function() yaplr::send_object(obj = 1:10, tag = "myobject"))
  got <- in_session(function() {
    list(lst = yaplr::list_objects(), value = yaplr::retrieve_object(tag = "myobject"))
  })
  expect_identical(rownames(got$lst), "myobject")
  expect_identical(got$value, 1:10)
  expect_identical(retrieve_object("myobject"), 1:10)
})

test_that("concurrent first calls from several sessions start one helper", {
  dir <- local_store()
  go <- tempfile("yaplr-go-")
  withr::defer(unlink(go))
  n <- 8L
  procs <- lapply(seq_len(n), function(i) {
    callr::r_bg(
      function(dir, go, i) {
        options(yaplr.dir = dir, yaplr.timeout = 30)
        deadline <- Sys.time() + 60
        while (!file.exists(go) && Sys.time() < deadline) Sys.sleep(0.005)
        yaplr::send_object(i, paste0("from-", i))
        yaplr::server_info()$pid
      },
      list(dir = dir, go = go, i = i)
    )
  })
  withr::defer(for (p in procs) p$kill())
  # Let them all load yaplr before the start signal.
  Sys.sleep(0.5)
  file.create(go)
  for (p in procs) p$wait(60000)
  pids <- vapply(procs, function(p) p$get_result(), numeric(1))
  expect_length(unique(pids), 1L)
  expect_setequal(rownames(list_objects()), paste0("from-", seq_len(n)))
})

test_that("mclapply workers send and retrieve, and the parent still works", {
  skip_on_os("windows")
  local_store()
  send_object("from parent", "p")
  res <- parallel::mclapply(1:4, function(i) {
    send_object(i * 10, paste0("w", i))
    retrieve_object("p")
  }, mc.cores = 2)
  expect_identical(unlist(res), rep("from parent", 4))
  for (i in 1:4) expect_identical(retrieve_object(paste0("w", i)), i * 10)
  send_object("parent again", "p")
  expect_identical(retrieve_object("p"), "parent again")
})

test_that("Ctrl-C ends a wait on a stopped helper", {
  dir <- local_store()
  send_object(1, "x")
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGSTOP)
  withr::defer(tools::pskill(pid, tools::SIGCONT))
  wait_for_state(pid, "T")
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    tryCatch(
      yaplr::retrieve_object("x", timeout = 120),
      yaplr_interrupted = function(e) "interrupted"
    )
  }, list(dir = dir))
  withr::defer(p$kill())
  # Interrupt once the session waits in poll() for the helper's answer.
  wchan <- function() {
    tryCatch(readLines(sprintf("/proc/%d/wchan", p$get_pid()), warn = FALSE),
             error = function(e) "")
  }
  wait_until(function() any(grepl("poll", wchan())), what = "the session to wait")
  t0 <- Sys.time()
  p$interrupt()
  p$wait(30000)
  expect_false(p$is_alive())
  expect_identical(p$get_result(), "interrupted")
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 30)
})
