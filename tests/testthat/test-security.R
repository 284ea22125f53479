# Another local user who could once write to a store directory must not be
# able to make the owner's helper write through planted links, adopt
# planted files, or wait on planted locks; an existing directory given as
# the store is used as it is, never chmod-ed.

plant_private_store <- function(dir) {
  dir.create(dir, mode = "0700")
  Sys.chmod(dir, "0700")
  dir
}

test_that("planted symbolic links in the store are refused, never followed", {
  dir <- local_store()
  victim <- withr::local_tempfile(lines = "precious")
  for (name in c("catalog.journal", "catalog.tmp", "yaplrd.log", "spawn.lock",
                 "yaplrd.lock")) {
    plant_private_store(dir)
    file.symlink(victim, file.path(dir, name))
    err <- expect_error(send_object(1, "x", timeout = 5), class = "yaplr_store")
    expect_match(conditionMessage(err), name, fixed = TRUE, info = name)
    expect_match(conditionMessage(err), "symbolic link", info = name)
    expect_identical(readLines(victim), "precious", info = name)
    if (name == "yaplrd.lock") {
      expect_error(is_server_running(), class = "yaplr_store")
    } else {
      expect_false(is_server_running(), info = name)
    }
    unlink(file.path(dir, name))
    unlink(dir, recursive = TRUE)
  }
  # Once the link is gone the store works.
  send_object(1, "x")
  expect_identical(retrieve_object("x"), 1)
})

test_that("an existing directory is never chmod-ed; one others can write to is refused", {
  base <- withr::local_tempdir()
  project <- file.path(base, "project")
  dir.create(project)
  writeLines("data", file.path(project, "keep.txt"))
  Sys.chmod(project, "2775", use_umask = FALSE)
  withr::local_options(yaplr.dir = project)
  err <- expect_error(send_object(1, "x", timeout = 5), class = "yaplr_store")
  expect_match(conditionMessage(err), "group")
  expect_match(conditionMessage(err), "subdirectory")
  expect_identical(format(file.info(project)$mode), "2775")
  expect_false(file.exists(file.path(project, "yaplrd.lock")))

  # Private enough (0755): used as it is, and left as it was.
  Sys.chmod(project, "0755", use_umask = FALSE)
  withr::defer(remove_store(project))
  send_object(1:3, "x")
  expect_identical(retrieve_object("x"), 1:3)
  quit_server()
  expect_identical(format(file.info(project)$mode), "755")
  expect_identical(readLines(file.path(project, "keep.txt")), "data")
})

test_that("a store entry of another user is refused at once, naming it", {
  skip_if_not(identical(unname(Sys.info()[["effective_user"]]), "root"),
              "needs root to make files of another user")
  skip_if(!nzchar(Sys.which("setpriv")) || !nzchar(Sys.which("flock")),
          "needs setpriv and flock")
  dir <- local_store()
  plant_private_store(dir)
  lock <- file.path(dir, "yaplrd.lock")
  file.create(lock)
  system2("chown", c("65534:65534", shQuote(lock)))
  Sys.chmod(dir, "0711", use_umask = FALSE)
  # A process of that user holds the planted lock.
  holder <- processx::process$new(
    "setpriv", c("--reuid=65534", "--regid=65534", "--clear-groups",
                 "flock", "-x", lock, "-c", "sleep 60")
  )
  withr::defer(holder$kill())
  wait_until(function() {
    out <- system2("flock", c("-n", "-s", shQuote(lock), "true"), stdout = FALSE, stderr = FALSE)
    out != 0
  }, what = "the planted lock to be held")
  Sys.chmod(dir, "0700", use_umask = FALSE)
  started <- Sys.time()
  err <- expect_error(send_object(1, "x", timeout = 30), class = "yaplr_store")
  expect_lt(as.numeric(Sys.time() - started, units = "secs"), 20)
  expect_match(conditionMessage(err), "yaplrd.lock", fixed = TRUE)
  expect_match(conditionMessage(err), "uid 65534", fixed = TRUE)
  expect_error(is_server_running(), class = "yaplr_store")
  holder$kill()
})
