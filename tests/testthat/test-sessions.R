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

test_that("a forked child uses its parent's session handle, and the parent keeps it", {
  skip_on_os("windows")
  local_store()
  send_object("from parent", "p")
  h <- yaplr:::session()
  expect_identical(typeof(h), "externalptr")
  res <- parallel::mclapply(1:2, function(i) {
    same <- identical(yaplr:::session(), h)
    send_object(i, paste0("child", i))
    list(same = same, got = retrieve_object("p"), pid = Sys.getpid())
  }, mc.cores = 2)
  for (r in res) {
    expect_true(r$same)
    expect_identical(r$got, "from parent")
    expect_false(r$pid == Sys.getpid())
  }
  # The parent's handle (and its connection) is still the one it uses.
  expect_identical(yaplr:::session(), h)
  expect_identical(retrieve_objects(c("child1", "child2")), list(child1 = 1L, child2 = 2L))
  send_object("parent again", "p")
  expect_identical(retrieve_object("p"), "parent again")
})

test_that("a session handle follows options(yaplr.capacity) set after it was made", {
  local_store()
  send_object(1, "x")
  expect_true(is.na(server_info()$capacity))
  quit_server()
  withr::local_options(yaplr.capacity = "300 KiB")
  send_object(1, "x")
  expect_identical(server_info()$capacity, 300 * 1024)
  quit_server()
  withr::local_options(yaplr.capacity = "lots")
  expect_error(send_object(1, "x"), "not the string \"lots\"", class = "yaplr_bad_argument")
  withr::local_options(yaplr.capacity = NULL)
  send_object(1, "x")
  expect_true(is.na(server_info()$capacity))
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
    # (A read would not wait: it finds "x" in the store's index.)
    tryCatch(
      yaplr::remove_object("x", timeout = 120),
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
