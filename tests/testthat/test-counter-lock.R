# Counters and locks across real processes.

test_that("counters add, read, set and compare-and-swap", {
  local_store()
  expect_identical(counter_get("c"), 0)
  expect_false(does_object_exist("c"))
  expect_identical(counter_add("c"), 1)
  expect_identical(counter_add("c", 10), 11)
  expect_identical(counter_add("c", -12), -1)
  expect_invisible(counter_set("c", 5))
  expect_false(counter_cas("c", 4, 9))
  expect_true(counter_cas("c", 5, 9))
  expect_identical(counter_get("c"), 9)
  expect_true(counter_cas("never", 0, 3))
  expect_identical(counter_get("never"), 3)
  counter_set("big", 2^53)
  expect_error(counter_add("big"), "2\\^53", class = "yaplr_bad_argument")
  expect_identical(counter_get("big"), 2^53)
  # Counters are objects of the store: listed, read, removed.
  objs <- list_objects()
  expect_setequal(rownames(objs), c("c", "never", "big"))
  expect_identical(unique(objs$class), "yaplr_counter")
  expect_identical(retrieve_object("c"), 9)
  expect_true(does_object_exist("c"))
  expect_error(send_object(1, "c"), "a counter is stored", class = "yaplr_bad_argument")
  send_object(1, "obj")
  expect_error(counter_add("obj"), "an object is stored", class = "yaplr_bad_argument")
  remove_object("c")
  expect_identical(counter_get("c"), 0)
  expect_equal(remove_objects(), 3)
  expect_identical(counter_get("never"), 0)
})

test_that("counter arguments are checked", {
  local_store()
  expect_error(counter_add(), class = "yaplr_bad_tag")
  expect_error(counter_add("c", by = 0.5), class = "yaplr_bad_argument")
  expect_error(counter_add("c", by = NA), class = "yaplr_bad_argument")
  expect_error(counter_add("c", by = 1:2), class = "yaplr_bad_argument")
  expect_error(counter_set("c", 2^54), class = "yaplr_bad_argument")
  expect_error(counter_set("c"), "`value` is missing", class = "yaplr_bad_argument")
  expect_error(counter_cas("c", 1), class = "yaplr_bad_argument")
  expect_error(counter_get("c", timeout = 0), class = "yaplr_bad_argument")
})

test_that("4 workers x 20000 counter_add give exactly 80000", {
  dir <- local_store()
  counter_set("n", 0)
  workers <- lapply(1:4, function(i) {
    callr::r_bg(function(dir) {
      options(yaplr.dir = dir)
      for (k in 1:20000) yaplr::counter_add("n")
      TRUE
    }, list(dir = dir))
  })
  withr::defer(for (p in workers) p$kill())
  for (p in workers) p$wait(120000)
  expect_true(all(vapply(workers, function(p) p$get_result(), logical(1))))
  expect_identical(counter_get("n"), 80000)
})

test_that("4 workers x 200 read-modify-writes under with_lock give exactly 800", {
  local_store()
  send_object(0, "total")
  res <- parallel::mclapply(1:4, function(i) {
    for (k in 1:200) with_lock("total", send_object(retrieve_object("total") + 1, "total"))
    TRUE
  }, mc.cores = 4)
  expect_identical(unlist(res), rep(TRUE, 4))
  expect_identical(retrieve_object("total"), 800)
})

test_that("a lock is exclusive, times out naming its holder, and tells who holds it", {
  dir <- local_store()
  l <- acquire_lock("door")
  expect_s3_class(l, "yaplr_lock")
  expect_output(print(l), "acquired by process")
  info <- lock_info("door")
  expect_true(info$held)
  expect_identical(info$pid, as.numeric(Sys.getpid()))
  expect_s3_class(info$since, "POSIXct")
  expect_error(acquire_lock("door"), "already holds", class = "yaplr_bad_argument")
  got <- callr::r(function(dir) {
    options(yaplr.dir = dir)
    tryCatch(yaplr::acquire_lock("door", timeout = 0.3),
             yaplr_timeout = function(e) conditionMessage(e))
  }, list(dir = dir))
  expect_match(got, "door")
  expect_match(got, as.character(Sys.getpid()))
  expect_true(release_lock(l))
  expect_false(release_lock(l))
  expect_output(print(l), "released")
  expect_false(lock_info("door")$held)
  # Locks are no objects.
  expect_equal(nrow(list_objects()), 0L)
})

test_that("with_lock releases on error and on interrupt", {
  local_store()
  expect_error(with_lock("w", stop("boom")), "boom")
  expect_false(lock_info("w")$held)
  res <- tryCatch(with_lock("w", {
    tools::pskill(Sys.getpid(), tools::SIGINT)
    Sys.sleep(5)
    "not interrupted"
  }), interrupt = function(e) "interrupted")
  expect_identical(res, "interrupted")
  expect_false(lock_info("w")$held)
  expect_identical(with_lock("w", 42), 42)
})

test_that("a holder killed with SIGKILL does not block the next", {
  dir <- local_store()
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    l <- yaplr::acquire_lock("k")
    cat("locked\n")
    Sys.sleep(600)
  }, list(dir = dir), stdout = "|")
  withr::defer(p$kill())
  wait_until(function() grepl("locked", p$read_output()), what = "the holder to lock")
  expect_true(lock_info("k")$held)
  # The next waiter is blocked, then gets the lock as soon as the holder dies.
  waiter <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    l <- yaplr::acquire_lock("k", timeout = 60)
    list(died = attr(l, "previous_holder_died"), at = Sys.time())
  }, list(dir = dir))
  withr::defer(waiter$kill())
  Sys.sleep(0.5)
  expect_true(waiter$is_alive())
  killed <- Sys.time()
  p$kill()
  waiter$wait(30000)
  got <- waiter$get_result()
  expect_true(got$died)
  expect_lt(as.numeric(got$at - killed, units = "secs"), 10)
})

test_that("a forked child never releases its parent's lock", {
  local_store()
  l <- acquire_lock("parent")
  job <- parallel::mcparallel(
    tryCatch(release_lock(l), yaplr_bad_argument = function(e) conditionMessage(e))
  )
  res <- parallel::mccollect(job, wait = TRUE)[[1]]
  expect_match(res, "forked child")
  expect_true(lock_info("parent")$held)
  expect_identical(lock_info("parent")$pid, as.numeric(Sys.getpid()))
  expect_true(release_lock(l))
})

test_that("a held handle keeps its lock through garbage collections", {
  local_store()
  held <- lapply(1:20, function(i) acquire_lock(paste0("kept", i)))
  for (k in 1:3) gc()
  expect_true(all(vapply(1:20, function(i) lock_info(paste0("kept", i))$held, TRUE)))
  expect_identical(vapply(held, release_lock, TRUE), rep(TRUE, 20))
  for (k in 1:2) gc()
  expect_false(any(vapply(1:20, function(i) lock_info(paste0("kept", i))$held, TRUE)))
  # Released handles stay released, collected or not.
  expect_false(release_lock(held[[3]]))
})

test_that("counters and locks follow every change of the options", {
  dir <- local_store()
  withr::local_options(yaplr.namespace = NULL)
  counter_set("n", 1)
  counter_set("n", 2, namespace = "other")
  # Set, changed in place, removed, set again, among changes of other
  # options (some of which add and remove options at the end of the list).
  options(yaplr.namespace = "other")
  expect_identical(counter_get("n"), 2)
  options(yaplr.test.a = 1)
  options(yaplr.namespace = "default")
  expect_identical(counter_get("n"), 1)
  options(yaplr.namespace = NULL, yaplr.test.b = 2)
  expect_identical(counter_get("n"), 1)
  options(yaplr.test.a = NULL)
  options(yaplr.namespace = "other")
  expect_identical(counter_get("n"), 2)
  options(yaplr.test.b = NULL, yaplr.namespace = NULL)
  options(yaplr.test.c = 3)
  expect_identical(counter_get("n"), 1)
  options(yaplr.test.c = NULL)
  # A store option that names another store, and a bad timeout option.
  other <- local_store()
  expect_identical(counter_get("n"), 0)
  options(yaplr.dir = dir)
  expect_identical(counter_get("n"), 1)
  withr::with_options(list(yaplr.timeout = "soon"),
                      expect_error(counter_add("n"), class = "yaplr_bad_argument"))
  withr::with_options(list(yaplr.timeout = "soon"),
                      expect_error(acquire_lock("n"), class = "yaplr_bad_argument"))
  expect_identical(counter_add("n"), 2)
})

test_that("a script's dropped handle is released after its top-level call; exit releases", {
  dir <- local_store()
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(c(
    sprintf("options(yaplr.dir = %s)", deparse(dir)),
    "local({ l <- yaplr::acquire_lock('dropped'); NULL })",
    "invisible(gc())",
    "cat(yaplr::lock_info('dropped')$held, '\n')",
    "kept <- yaplr::acquire_lock('kept-until-exit')"
  ), script)
  out <- callr::rscript(script, show = FALSE, libpath = .libPaths())
  expect_match(out$stdout, "FALSE")
  # A script that ends holding a lock releases it: the next holder is not
  # told that its previous holder died.
  l <- acquire_lock("kept-until-exit", timeout = 5)
  expect_false(attr(l, "previous_holder_died"))
  release_lock(l)
})

test_that("locks nobody holds make room when the table is full", {
  local_store()
  kept <- acquire_lock("kept")
  counter_set("kept", 7)
  # More distinct names than the table has slots (65,536).
  for (i in seq_len(66000)) release_lock(acquire_lock(paste0("once", i)))
  expect_true(lock_info("kept")$held)
  expect_identical(counter_get("kept"), 7)
  expect_false(lock_info("once1")$held)
  expect_true(release_lock(acquire_lock("once1")))
  expect_true(release_lock(kept))
})

test_that("a lock handle collected unreleased releases its lock; a restored one is inert", {
  local_store()
  local({
    l <- acquire_lock("gc")
    NULL
  })
  # The dropped handle gets its finalizer with the next acquire_lock() (or
  # at the end of the top-level call), and R's next collection runs it.
  release_lock(acquire_lock("another"))
  gc()
  expect_false(lock_info("gc")$held)
  l <- acquire_lock("gc")
  copy <- unserialize(serialize(l, NULL))
  expect_error(release_lock(copy), "no longer attached", class = "yaplr_bad_argument")
  expect_true(release_lock(l))
  expect_error(release_lock("gc"), class = "yaplr_bad_argument")
})
