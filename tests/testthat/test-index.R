# The store's index: reads that need no helper see every change at once,
# never a torn value, and let go of an index the helper replaced or closed.

test_that("a session reads its own changes, and another session's, at once", {
  dir <- local_store()
  for (i in 1:200) {
    send_object(list(i = i, x = rep(i, i %% 17)), "t")
    expect_identical(retrieve_object("t")$i, i)
  }
  remove_object("t")
  expect_false(does_object_exist("t"))
  expect_error(retrieve_object("t"), class = "yaplr_not_found")
  # Another session's send, then its remove.
  in_session(function() yaplr::send_object("theirs", "u", description = "from them"))
  expect_identical(retrieve_object("u"), "theirs")
  expect_identical(object_info("u")$description, "from them")
  expect_identical(rownames(list_objects()), "u")
  in_session(function() yaplr::remove_object("u"))
  expect_false(does_object_exist("u"))
  expect_identical(nrow(list_objects()), 0L)
})

test_that("the index grows under its readers, and keeps every object", {
  dir <- local_store()
  x <- as.list(seq_len(20000))
  names(x) <- sprintf("o%05d", seq_along(x))
  reader <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    yaplr::send_object(0L, "first")
    # Maps the index now, before it grows.
    stopifnot(identical(yaplr::retrieve_object("first"), 0L))
    while (!yaplr::does_object_exist("done")) Sys.sleep(0.01)
    tags <- sprintf("o%05d", seq_len(20000))
    all(vapply(seq_along(tags), function(i) identical(yaplr::retrieve_object(tags[i]), i), TRUE))
  }, list(dir = dir))
  withr::defer(reader$kill())
  wait_until(function() does_object_exist("first"), what = "the reader")
  for (b in 0:9) send_objects(x[b * 2000 + 1:2000])
  send_object(TRUE, "done")
  reader$wait(60000)
  expect_true(reader$get_result())
  l <- list_objects()
  expect_identical(nrow(l), 20002L)
  expect_identical(sort(rownames(l)), sort(c(names(x), "first", "done")))
  # The old index files are gone: one index in the store.
  expect_identical(sort(grep("^index", list.files(dir), value = TRUE)), "index")
})

test_that("readers racing a writer in another process never see a torn value", {
  dir <- local_store()
  send_object(list(v = 0L, body = integer()), "hot")
  writer <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    for (v in 1:3000) {
      # Sizes vary, so freed records are reused by other sizes' values.
      yaplr::send_object(list(v = v, body = rep(v, v %% 300)), "hot")
      yaplr::send_object(rep(v, (v * 7) %% 500), sprintf("churn%d", v %% 20))
    }
    TRUE
  }, list(dir = dir))
  withr::defer(writer$kill())
  seen <- 0L
  last <- 0L
  while (writer$is_alive()) {
    got <- retrieve_object("hot")
    expect_identical(got$body, rep(got$v, got$v %% 300))
    expect_gte(got$v, last)
    last <- got$v
    seen <- seen + 1L
  }
  expect_true(writer$get_result())
  expect_gt(seen, 10L)
  expect_identical(retrieve_object("hot")$v, 3000L)
})

test_that("a batch is seen whole or not at all by readers of the index", {
  dir <- local_store()
  send_objects(list(a = 0L, b = 0L))
  writer <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    # 200 objects between "a" and "b": the batch takes a while to apply.
    filler <- stats::setNames(as.list(1:200), sprintf("f%03d", 1:200))
    for (v in 1:400) yaplr::send_objects(c(list(a = v), filler, list(b = v)))
    TRUE
  }, list(dir = dir))
  withr::defer(writer$kill())
  n <- 0L
  while (writer$is_alive()) {
    a <- retrieve_object("a")
    b <- retrieve_object("b")
    # "b" is read after "a": it can be newer, never older.
    expect_gte(b, a)
    n <- n + 1L
  }
  expect_true(writer$get_result())
  expect_gt(n, 10L)
})

test_that("a session lets go of an index that quit_server() closed", {
  dir <- local_store()
  send_object("before", "t")
  expect_identical(retrieve_object("t"), "before")
  in_session(function() yaplr::quit_server())
  expect_false(file.exists(file.path(dir, "index")))
  # The old mapping is closed: the session asks a new helper, which has no
  # such object.
  expect_false(does_object_exist("t"))
  expect_error(retrieve_object("t"), class = "yaplr_not_found")
  send_object("after", "t")
  expect_identical(retrieve_object("t"), "after")
})

test_that("a helper killed in the middle of its work leaves readers a whole index", {
  dir <- local_store()
  send_objects(list(a = 1, b = "two", big = runif(1e5)))
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGKILL)
  # (Its lock file is released a moment after the process is gone.)
  wait_until(function() !pid_alive(pid) && !is_server_running(), what = "the helper to die")
  # No helper: every read answers from the index as the helper left it.
  expect_identical(retrieve_object("a"), 1)
  expect_identical(retrieve_object("b"), "two")
  expect_length(retrieve_object("big"), 1e5)
  expect_identical(sort(rownames(list_objects())), c("a", "b", "big"))
  expect_false(is_server_running())
  # The first change starts a new helper, which makes a new index.
  send_object(3, "c")
  expect_true(is_server_running())
  expect_identical(retrieve_object("a"), 1)
  expect_identical(retrieve_object("c"), 3)
})
