# The soak: several R processes hammer one store with a random mix of
# send / overwrite / retrieve / remove / list on a shared set of tags, with
# values that carry their own checksum. test-soak.R runs it briefly;
# tools/soak.R sources this file and runs it for longer. So it needs only
# base R, callr and yaplr (no testthat, no withr).

# PIDs of the yaplrd helpers serving the store `dir`, from /proc.
yaplrd_pids <- function(dir) {
  pids <- integer()
  for (p in list.files("/proc", pattern = "^[0-9]+$")) {
    cmd <- tryCatch(
      suppressWarnings(readBin(file.path("/proc", p, "cmdline"), "raw", 65536L)),
      error = function(e) raw()
    )
    if (length(cmd) == 0L) next # gone, or a zombie
    cmd[cmd == as.raw(0L)] <- as.raw(1L)
    args <- strsplit(rawToChar(cmd), "\001", fixed = TRUE)[[1L]]
    if (basename(args[1L]) != "yaplrd") next
    i <- match("--dir", args)
    if (!is.na(i) && i < length(args) && identical(args[i + 1L], dir)) {
      pids <- c(pids, as.integer(p))
    }
  }
  pids
}

# A value for `tag` that carries its own checksum: a list (double or
# character payload, R serialization) or a plain double / raw vector with
# the metadata as an attribute (zero-copy when large). From 8 bytes to
# `max_bytes`, log-uniformly.
soak_value <- function(tag, worker, seq, max_bytes) {
  checksum <- function(p) {
    if (is.character(p)) p <- utf8ToInt(paste(p, collapse = ""))
    x <- as.double(if (is.raw(p)) as.integer(p) else p)
    c(sum(x), sum(x * seq_along(x)))
  }
  kind <- sample(c("list", "vector", "raw", "strings"), 1L)
  bytes <- max(8, floor(exp(stats::runif(1L, log(8), log(max_bytes)))))
  payload <- switch(kind,
    list = ,
    vector = stats::runif(max(1, bytes %/% 8)),
    raw = as.raw(sample.int(256L, bytes, replace = TRUE) - 1L),
    strings = sprintf("%08x", sample.int(.Machine$integer.max, max(1, bytes %/% 16)))
  )
  meta <- list(tag = tag, worker = worker, seq = seq, kind = kind,
               n = length(payload), check = checksum(payload))
  if (kind %in% c("vector", "raw")) {
    structure(payload, soak = meta)
  } else {
    list(meta = meta, payload = payload)
  }
}

# "" when `v` is a whole value sent under `tag`, otherwise what is wrong.
soak_verify <- function(v, tag) {
  checksum <- function(p) {
    if (is.character(p)) p <- utf8ToInt(paste(p, collapse = ""))
    x <- as.double(if (is.raw(p)) as.integer(p) else p)
    c(sum(x), sum(x * seq_along(x)))
  }
  if (is.list(v) && !is.null(v$meta)) {
    meta <- v$meta
    payload <- v$payload
  } else {
    meta <- attr(v, "soak", exact = TRUE)
    payload <- as.vector(v)
  }
  if (!is.list(meta) || is.null(meta$tag)) {
    return(paste0("under \"", tag, "\": a value without its metadata"))
  }
  if (!identical(meta$tag, tag)) {
    return(paste0("under \"", tag, "\": the value sent under \"", meta$tag, "\""))
  }
  if (length(payload) != meta$n) {
    return(sprintf("under \"%s\" (worker %d, #%d): %d elements, %d sent",
                   tag, meta$worker, meta$seq, length(payload), meta$n))
  }
  if (!identical(checksum(payload), meta$check)) {
    return(sprintf("under \"%s\" (worker %d, #%d, %s): checksum mismatch",
                   tag, meta$worker, meta$seq, meta$kind))
  }
  ""
}

# Both run in other processes (callr) or alone: no enclosing environment.
environment(soak_value) <- baseenv()
environment(soak_verify) <- baseenv()

# One worker (run in its own R process by callr): waits for the `go` file,
# then for `duration` seconds does random operations; counts operations by
# kind, errors by class and values verified.
soak_worker <- function(dir, id, tags, go, duration, seed, max_bytes, make_value, verify) {
  options(yaplr.dir = dir, yaplr.timeout = 30)
  set.seed(seed)
  file.create(paste0(go, ".ready.", id))
  wait_deadline <- Sys.time() + 120
  while (!file.exists(go)) {
    if (Sys.time() > wait_deadline) stop("worker ", id, ": no start signal")
    Sys.sleep(0.002)
  }
  until <- Sys.time() + duration
  kinds <- c("send", "overwrite", "retrieve", "remove", "list", "count", "lock", "push", "pop")
  ops <- stats::setNames(numeric(length(kinds)), kinds)
  errors <- numeric()
  unexpected <- 0
  messages <- character()
  verified <- 0
  bad <- 0
  bad_what <- character()
  seq <- 0L
  listed <- character()
  # Coordination, in a namespace of its own: what this worker added to the
  # counter and (under the lock) to the locked total, and the queue items
  # it pushed and completed.
  co <- "soak-coordination"
  counted <- 0
  locked <- 0
  pushed <- character()
  popped <- character()
  held <- list() # earlier retrieved values (views), re-checked later
  check <- function(v, tag) {
    what <- verify(v, tag)
    if (nzchar(what)) {
      bad <<- bad + 1
      if (length(bad_what) < 20L) bad_what <<- c(bad_what, paste0("worker ", id, ": ", what))
    } else {
      verified <<- verified + 1
    }
  }
  while (Sys.time() < until) {
    op <- sample(kinds, 1L, prob = c(0.2, 0.12, 0.28, 0.1, 0.1, 0.08, 0.04, 0.04, 0.04))
    if (op == "overwrite" && length(listed) == 0L) op <- "send"
    tag <- if (op == "overwrite") sample(listed, 1L) else sample(tags, 1L)
    ops[[op]] <- ops[[op]] + 1
    tryCatch(
      switch(op,
        send = ,
        overwrite = {
          seq <- seq + 1L
          yaplr::send_object(make_value(tag, id, seq, max_bytes), tag)
        },
        retrieve = {
          v <- yaplr::retrieve_object(tag, copy = stats::runif(1L) < 0.2)
          check(v, tag)
          held[[length(held) + 1L]] <- list(v = v, tag = tag)
          if (length(held) > 5L) held <- held[-1L]
        },
        remove = yaplr::remove_object(tag),
        count = {
          yaplr::counter_add("count", namespace = co)
          counted <- counted + 1
        },
        lock = yaplr::with_lock("total", namespace = co, {
          v <- tryCatch(yaplr::retrieve_object("total", namespace = co),
                        yaplr_not_found = function(e) 0)
          yaplr::send_object(v + 1, "total", namespace = co)
          locked <- locked + 1
        }),
        push = {
          item <- sprintf("%d-%d", id, length(pushed) + 1L)
          yaplr::queue_push("q", item, namespace = co)
          pushed <- c(pushed, item)
        },
        pop = {
          it <- tryCatch(yaplr::queue_pop("q", timeout = 0.05, ack = FALSE, namespace = co),
                         yaplr_timeout = function(e) NULL)
          if (!is.null(it)) {
            yaplr::queue_ack(it)
            popped <- c(popped, it$value)
          }
        },
        list = {
          l <- yaplr::list_objects()
          listed <- rownames(l)
          if (!all(listed %in% tags) || any(l$size <= 0)) {
            bad <- bad + 1
            bad_what <- c(bad_what, paste0("worker ", id, ": list_objects() gave unknown tags or sizes"))
          }
        }
      ),
      error = function(e) {
        cls <- if (inherits(e, "yaplr_error")) class(e)[1L] else paste0("R error (", class(e)[1L], ")")
        errors[[cls]] <<- if (is.na(errors[cls])) 1 else errors[[cls]] + 1
        expected <- cls == "yaplr_not_found" && op %in% c("retrieve", "remove")
        if (!expected) {
          unexpected <<- unexpected + 1
          if (length(messages) < 20L) {
            messages <<- c(messages, paste0("worker ", id, ", ", op, " \"", tag, "\": ", cls, ": ",
                                            conditionMessage(e)))
          }
        }
      }
    )
    # A value retrieved earlier stays whole whatever happened to its tag since.
    if (length(held) > 0L && stats::runif(1L) < 0.1) {
      h <- held[[sample.int(length(held), 1L)]]
      check(h$v, h$tag)
    }
  }
  list(id = id, ops = ops, errors = errors, unexpected = unexpected, messages = messages,
       verified = verified, bad = bad, bad_what = bad_what, counted = counted, locked = locked,
       pushed = pushed, popped = popped)
}

# Run `processes` workers for `duration` seconds on the store `dir`, check
# what is left in the store, stop its helper, and count what remains.
run_soak <- function(dir, duration, processes = 4L, n_tags = 50L, max_bytes = 1e6,
                     seed = sample.int(1e6, 1L), slack = 60, kill_every = 0) {
  old <- options(yaplr.dir = dir, yaplr.timeout = 30)
  on.exit(options(old), add = TRUE)
  tags <- sprintf("%s%02d", rep_len(c("plain-", "with space ", "../slash/", "caf\u00e9-", "x"), n_tags),
                  seq_len(n_tags))
  go <- tempfile("yaplr-soak-go-")
  on.exit(unlink(c(go, paste0(go, ".ready.", seq_len(processes)))), add = TRUE)
  procs <- lapply(seq_len(processes), function(i) {
    callr::r_bg(soak_worker,
      list(dir = dir, id = i, tags = tags, go = go, duration = duration, seed = seed + i,
           max_bytes = max_bytes, make_value = soak_value, verify = soak_verify),
      supervise = TRUE
    )
  })
  on.exit(for (p in procs) p$kill(), add = TRUE)

  # Start them together once all are ready.
  ready_by <- Sys.time() + 120
  while (!all(file.exists(paste0(go, ".ready.", seq_len(processes))))) {
    dead <- !vapply(procs, function(p) p$is_alive(), logical(1))
    if (any(dead)) {
      stop("a soak worker failed to start: ", conditionMessage(
        tryCatch(procs[[which(dead)[1L]]]$get_result(), error = identity)
      ))
    }
    if (Sys.time() > ready_by) stop("the soak workers did not start within 120 s")
    Sys.sleep(0.01)
  }
  t0 <- Sys.time()
  file.create(go)
  # With kill_every, the helper is killed (SIGKILL) that often meanwhile:
  # the workers' next calls start a new one.
  kills <- 0L
  if (kill_every > 0) {
    next_kill <- t0 + kill_every
    while (Sys.time() < t0 + duration) {
      if (Sys.time() >= next_kill) {
        for (pid in yaplrd_pids(dir)) {
          tools::pskill(pid, tools::SIGKILL)
          kills <- kills + 1L
        }
        next_kill <- next_kill + kill_every
      }
      Sys.sleep(0.01)
    }
  }
  deadline <- t0 + duration + slack
  for (p in procs) {
    left <- as.numeric(deadline - Sys.time(), units = "secs")
    if (left > 0) p$wait(ceiling(left * 1000))
  }
  elapsed <- as.numeric(Sys.time() - t0, units = "secs")
  hung <- sum(vapply(procs, function(p) p$is_alive(), logical(1)))
  for (p in procs) if (p$is_alive()) p$kill()

  res <- list(duration = duration, elapsed = elapsed, processes = processes, tags = n_tags,
              seed = seed, ops = NULL, errors = numeric(), unexpected = 0, messages = character(),
              verified = 0, bad = 0, bad_what = character(), hung = as.integer(hung), failed = 0L,
              kills = kills, counted = 0, locked = 0, pushed = character(), popped = character())
  for (p in procs) {
    if (p$is_alive()) next
    r <- tryCatch(p$get_result(), error = identity)
    if (inherits(r, "error")) {
      res$failed <- res$failed + 1L
      res$messages <- c(res$messages, paste("a worker failed:", conditionMessage(r)))
      next
    }
    res$ops <- if (is.null(res$ops)) r$ops else res$ops + r$ops
    for (cls in names(r$errors)) {
      res$errors[[cls]] <- (if (is.na(res$errors[cls])) 0 else res$errors[[cls]]) + r$errors[[cls]]
    }
    res$unexpected <- res$unexpected + r$unexpected
    res$messages <- c(res$messages, r$messages)
    res$verified <- res$verified + r$verified
    res$bad <- res$bad + r$bad
    res$bad_what <- c(res$bad_what, r$bad_what)
    res$counted <- res$counted + r$counted
    res$locked <- res$locked + r$locked
    res$pushed <- c(res$pushed, r$pushed)
    res$popped <- c(res$popped, r$popped)
  }

  # Every object left in the store is whole and under its own tag.
  final <- tryCatch({
    left <- rownames(yaplr::list_objects())
    for (tag in left) {
      what <- soak_verify(yaplr::retrieve_object(tag), tag)
      if (nzchar(what)) {
        res$bad <- res$bad + 1
        res$bad_what <- c(res$bad_what, paste("at the end:", what))
      } else {
        res$verified <- res$verified + 1
      }
    }
    length(left)
  }, error = function(e) {
    res$unexpected <<- res$unexpected + 1
    res$messages <<- c(res$messages, paste("final check:", conditionMessage(e)))
    NA_integer_
  })
  res$objects_at_end <- final

  # Coordination: no increment lost or doubled, under the lock or not; every
  # queue item completed at most once, and the others still queued (the
  # items leased by a worker that ended are handed back).
  co <- "soak-coordination"
  tryCatch({
    res$counter <- yaplr::counter_get("count", namespace = co)
    res$total <- tryCatch(yaplr::retrieve_object("total", namespace = co),
                          yaplr_not_found = function(e) 0)
    left <- character()
    repeat {
      it <- tryCatch(yaplr::queue_pop("q", timeout = 5, namespace = co),
                     yaplr_timeout = function(e) NULL)
      if (is.null(it)) break
      left <- c(left, it)
    }
    res$queued_left <- length(left)
    seen <- c(res$popped, left)
    res$queue_ok <- !anyDuplicated(seen) && setequal(seen, res$pushed)
  }, error = function(e) {
    res$unexpected <<- res$unexpected + 1
    res$messages <<- c(res$messages, paste("coordination check:", conditionMessage(e)))
  })

  tryCatch(yaplr::quit_server(timeout = 30), error = function(e) {
    res$unexpected <<- res$unexpected + 1
    res$messages <<- c(res$messages, paste("quit_server():", conditionMessage(e)))
  })
  gone_by <- Sys.time() + 10
  while (length(yaplrd_pids(dir)) > 0L && Sys.time() < gone_by) Sys.sleep(0.01)
  res$helpers_left <- length(yaplrd_pids(dir))
  res$files_left <- if (dir.exists(dir)) length(list.files(dir, all.files = TRUE, no.. = TRUE)) else 0L
  res
}

# A printable report of a run_soak() result.
format_soak <- function(res) {
  kv <- function(x) {
    if (length(x) == 0L) return("none")
    paste(sprintf("%s %s", names(x), format(x, big.mark = ",", scientific = FALSE, trim = TRUE)),
          collapse = ", ")
  }
  expected <- res$errors[names(res$errors) == "yaplr_not_found"]
  c(
    sprintf("duration:            %.1f s requested, %.1f s until every process finished",
            res$duration, res$elapsed),
    sprintf("processes:           %d (seed %d), %d shared tags", res$processes, res$seed, res$tags),
    sprintf("operations done:     %s (%s)", format(sum(res$ops), big.mark = ","), kv(res$ops)),
    sprintf("errors by class:     %s", kv(res$errors)),
    sprintf("  expected:          %s (yaplr_not_found on retrieve / remove)",
            format(sum(expected), big.mark = ",")),
    sprintf("  unexpected:        %d", as.integer(res$unexpected)),
    sprintf("values verified:     %s (%d torn or wrong)", format(res$verified, big.mark = ","),
            as.integer(res$bad)),
    sprintf("processes hung:      %d, failed: %d", res$hung, res$failed),
    sprintf("helper kills:        %d", as.integer(res$kills)),
    sprintf("counter:             %s (%s added)", format(res$counter, big.mark = ","),
            format(res$counted, big.mark = ",")),
    sprintf("locked total:        %s (%s read-modify-writes under the lock)",
            format(res$total, big.mark = ","), format(res$locked, big.mark = ",")),
    sprintf("queue:               %d pushed, %d completed, %d left, %s",
            length(res$pushed), length(res$popped), as.integer(res$queued_left),
            if (isTRUE(res$queue_ok)) "each exactly once" else "ITEMS LOST OR DOUBLED"),
    sprintf("objects at the end:  %s (before quit_server())", res$objects_at_end),
    sprintf("files left:          %d", as.integer(res$files_left)),
    sprintf("helper processes left: %d", as.integer(res$helpers_left)),
    if (length(res$bad_what)) paste("  bad value:", res$bad_what),
    if (length(res$messages)) paste("  unexpected:", res$messages)
  )
}

# Whether a run_soak() result passes: no torn or wrong value, no hang, no
# error but yaplr_not_found, nothing left behind.
soak_passed <- function(res) {
  res$bad == 0 && res$hung == 0L && res$failed == 0L && res$unexpected == 0 &&
    identical(res$counter, res$counted) && identical(res$total, res$locked) &&
    isTRUE(res$queue_ok) &&
    all(names(res$errors) == "yaplr_not_found") &&
    res$files_left == 0L && res$helpers_left == 0L
}
