//! yaplr's options (`options(yaplr.namespace = )` and the others), as one
//! call reads them.
//!
//! R keeps its options in one pairlist, `.Options` in the base
//! environment, and `Rf_GetOption1()` searches it from the start: some
//! 70 cells, each time. yaplr's options come late in it (or not at all),
//! and a counter or lock call needs five of them, which took a good part
//! of its time. So the cells that hold them are remembered, and found
//! again only when the list may have changed its cells:
//!
//! - `options(name = value)` for an option that is set changes the value
//!   in its cell (which is where we read it, each time);
//! - for an option that is not set, it appends a new cell at the end, so
//!   the last cell is another;
//! - `options(name = NULL)` unlinks the option's cell, so the list is one
//!   shorter, unless a cell was also appended, which changes the last one.
//!
//! The remembered list is the same while its first cell, its length and
//! its last cell are. The first and last cells are preserved while they
//! are remembered, so that no new cell can take their address. Checking
//! costs two walks inside R (length and last cell) instead of five
//! searches. Anything unexpected (no list) makes every read a search.

use crate::args::Value;
use crate::ffi;
use extendr_ffi::{
    R_BaseEnv, R_NilValue, R_PreserveObject, R_ReleaseObject, Rf_xlength, CAR, CDR, SEXP, SEXPTYPE,
    TAG, TYPEOF,
};
use std::cell::RefCell;
use std::ffi::CStr;

/// The options, in the order of `Settings`' fields.
const NAMES: [&CStr; N] = [
    c"yaplr.namespace",
    c"yaplr.timeout",
    c"yaplr.automatic_server_start",
    c"yaplr.dir",
    c"yaplr.capacity",
    c"yaplr.progress",
];

const N: usize = 6;

/// The values of yaplr's options (NULL when unset) when a call began.
/// They are borrowed from R's options list, which keeps them alive while
/// the glue runs no R code.
#[derive(Clone, Copy)]
pub struct Settings {
    pub namespace: Value<'static>,
    pub timeout: Value<'static>,
    pub automatic_server_start: Value<'static>,
    pub dir: Value<'static>,
    pub capacity: Value<'static>,
    pub progress: Value<'static>,
}

/// The remembered options list: its first cell, length and last cell, and
/// the cells of yaplr's options in it (NULL: not set).
struct Cells {
    head: SEXP,
    len: isize,
    last: SEXP,
    cells: [SEXP; N],
}

thread_local! {
    static CELLS: RefCell<Option<Cells>> = const { RefCell::new(None) };
}

/// R's options list (`.Options`).
fn options_list() -> SEXP {
    // SAFETY: a variable of the base environment, read on R's main
    // thread (for the base environment this reads the symbol's value).
    unsafe { ffi::Rf_findVarInFrame(R_BaseEnv, ffi::symbol(c".Options")) }
}

impl Settings {
    /// The options now. Only on R's main thread.
    pub fn read() -> Settings {
        let values = loop {
            let list = options_list();
            // SAFETY: `list` is the value of .Options; reading its type.
            if unsafe { TYPEOF(list) } != SEXPTYPE::LISTSXP {
                break search();
            }
            // SAFETY: a pairlist; both walks only read it.
            let (len, last) = unsafe { (Rf_xlength(list), ffi::Rf_lastElt(list)) };
            let remembered = CELLS.with(|c| {
                c.borrow()
                    .as_ref()
                    .filter(|c| c.head == list && c.len == len && c.last == last)
                    .map(|c| c.cells)
            });
            if let Some(cells) = remembered {
                // SAFETY: each remembered cell is a cell of the list (see
                // the module's comment); CAR reads its value.
                break cells.map(|cell| unsafe {
                    if cell.is_null() {
                        R_NilValue
                    } else {
                        CAR(cell)
                    }
                });
            }
            // The list changed: remember its cells now. Preserving
            // allocates, which may run finalizers (R code, that may change
            // options or call yaplr): no borrow is held meanwhile, and the
            // next turn checks the list again.
            let fresh = Cells {
                head: list,
                len,
                last,
                cells: find_cells(list),
            };
            // SAFETY: keeping the first and last cells from being collected
            // (and their addresses reused) while they are remembered, and
            // letting the old ones go (releasing allocates nothing).
            unsafe {
                R_PreserveObject(fresh.head);
                R_PreserveObject(fresh.last);
            }
            if let Some(old) = CELLS.with(|c| c.borrow_mut().replace(fresh)) {
                // SAFETY: as above.
                unsafe {
                    R_ReleaseObject(old.head);
                    R_ReleaseObject(old.last);
                }
            }
        };
        // SAFETY: values of R's options list, alive while the list holds
        // them (see Settings).
        let [namespace, timeout, automatic_server_start, dir, capacity, progress] =
            values.map(|v| unsafe { Value::arg(v) });
        Settings {
            namespace,
            timeout,
            automatic_server_start,
            dir,
            capacity,
            progress,
        }
    }
}

/// The cells of yaplr's options in `list` (NULL for those not set): the
/// first cell of each name, as R's own search finds it.
fn find_cells(list: SEXP) -> [SEXP; N] {
    let symbols = NAMES.map(ffi::symbol);
    let mut cells: [SEXP; N] = [std::ptr::null_mut(); N];
    let mut cell = list;
    // SAFETY: walking a pairlist on R's main thread; TAG and CDR only
    // read it.
    unsafe {
        while TYPEOF(cell) == SEXPTYPE::LISTSXP {
            let tag = TAG(cell);
            for (i, s) in symbols.iter().enumerate() {
                if *s == tag && cells[i].is_null() {
                    cells[i] = cell;
                }
            }
            cell = CDR(cell);
        }
    }
    cells
}

/// Each option searched for in R's options list.
fn search() -> [SEXP; N] {
    // SAFETY: Rf_GetOption1 returns the option's value (NULL when unset).
    NAMES.map(|n| unsafe { ffi::Rf_GetOption1(ffi::symbol(n)) })
}
