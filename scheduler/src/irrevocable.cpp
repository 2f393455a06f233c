// Calls a speculative segment cannot take back. weft links programs with `-Wl,--wrap=...` for each
// of them (see the top-level CMakeLists.txt), so that a call from the program's own code comes here
// first; like libitm's irrevocable mode, a speculative segment then waits for its turn (parks until
// its tasklet is the head, and goes on inevitable) before the call happens. With one worker, or
// outside weft, each is the plain call plus one check.
//
//   exit()                 A tasklet's exit must not end the process before the segments ahead of it
//                          in serial order have committed (their output would be lost, and the exit
//                          might come from a state serial order never reaches), and static destructors
//                          must not run while other threads are inside user code: see
//                          ordered_before_exit().
//   abort(), assert()'s   The process ends with no destructor run. Called by a speculative segment
//   __assert_fail,         that read a stale value (a check that holds in serial order), it would end
//   quick_exit(), _Exit()  a program that never ends so with one worker (newcomer round 16: an
//                          assert on a tvar another tasklet set before it in serial order failed in
//                          every run at 2 workers); called for real, the segments before it must
//                          have committed and its own output come out first, or lines printed
//                          before it are lost (see ordered_before_abort()). _exit (POSIX), raise()
//                          and kill() are not wrapped.
//   __cxa_guard_acquire    The first use of a function-local static runs its initialiser once, for
//                          good: run speculatively and rolled back, the static would stay marked
//                          initialised with a value computed from a stale state, holding memory the
//                          rollback freed. (The compiler calls it only while the guard is not set
//                          yet, so initialised statics cost nothing.)
//   std::exception_ptr's   libstdc++ counts the references to an exception object in the object's
//   reference count        header, outside any transaction: std::current_exception() and every copy
//                          of an exception_ptr add one (exception_ptr::_M_addref), every destruction
//                          of a non-null one drops one (_M_release), freeing the object at zero.
//                          Rolled back, an attempt that copied one left the count one too high (the
//                          object was never freed), and one that dropped the last reference had
//                          freed the object the restored stack still pointed to: the re-run freed it
//                          again (heap corruption, every run under abort injection). The inline
//                          copy, assignment and destructor of exception_ptr call these two, so the
//                          program's own code comes here. Moves change no count and stay
//                          speculative; so do throw and catch without an exception_ptr.
//   std::rethrow_exception Raises the count inside libstdc++ (see the wrap below).
//   std::make_exception_ptr Its object gets its first reference inside libstdc++ (exception_ptr's
//   (__cxa_init_primary_   out-of-line constructor): it waits at the initialisation of the object's
//   exception)             header, before the object exists (see the wrap below).
#include <cstdint>
#include <cstdlib>
#include <cxxabi.h>
#include <exception>
#include <typeinfo>

#include "ordered.hpp"
#include "weft/detail/context.hpp"
#include "weft/detail/intent.hpp"
#include "weft/detail/stm_core.hpp"

extern "C" [[noreturn]] void __real_exit(int status);
extern "C" int __real___cxa_guard_acquire(std::int64_t* guard);
// The member functions take `this` as their first argument (Itanium C++ ABI): declared here as free
// functions under the linker's names for them.
void real_exception_ptr_addref(std::exception_ptr* self) noexcept __asm__("__real__ZNSt15__exception_ptr13exception_ptr9_M_addrefEv");
void real_exception_ptr_release(std::exception_ptr* self) noexcept __asm__("__real__ZNSt15__exception_ptr13exception_ptr10_M_releaseEv");
std::exception_ptr real_current_exception() noexcept __asm__("__real__ZSt17current_exceptionv");

extern "C" [[noreturn]] void __wrap_exit(int status) {
  weft::detail::process_exit_begins();
  weft::detail::ordered_before_exit();
  __real_exit(status);
}

extern "C" [[noreturn]] void __real_abort() noexcept;
extern "C" [[noreturn]] void __real___assert_fail(const char* assertion, const char* file, unsigned line,
                                                  const char* function) noexcept;
extern "C" [[noreturn]] void __real_quick_exit(int status) noexcept;
extern "C" [[noreturn]] void __real__Exit(int status) noexcept;

extern "C" [[noreturn]] void __wrap_abort() noexcept {
  weft::detail::ordered_before_abort();
  __real_abort();
}

extern "C" [[noreturn]] void __wrap___assert_fail(const char* assertion, const char* file, unsigned line,
                                                  const char* function) noexcept {
  weft::detail::ordered_before_abort();  // before the message: a rolled-back segment prints none
  __real___assert_fail(assertion, file, line, function);
}

extern "C" [[noreturn]] void __wrap_quick_exit(int status) noexcept {
  weft::detail::ordered_before_abort();
  __real_quick_exit(status);
}

extern "C" [[noreturn]] void __wrap__Exit(int status) noexcept {
  weft::detail::ordered_before_abort();
  __real__Exit(status);
}

extern "C" int __wrap___cxa_guard_acquire(std::int64_t* guard) {
  // The first byte is set once the static is initialised (Itanium C++ ABI 3.3.2).
  if (*reinterpret_cast<volatile const char*>(guard) == 0) weft::detail::observe_scheduler();
  return __real___cxa_guard_acquire(guard);
}

void wrap_exception_ptr_addref(std::exception_ptr* self) noexcept __asm__("__wrap__ZNSt15__exception_ptr13exception_ptr9_M_addrefEv");
void wrap_exception_ptr_addref(std::exception_ptr* self) noexcept {
  weft::detail::observe_scheduler();
  real_exception_ptr_addref(self);
}

void wrap_exception_ptr_release(std::exception_ptr* self) noexcept __asm__("__wrap__ZNSt15__exception_ptr13exception_ptr10_M_releaseEv");
// While the C++ runtime destroys an exception object (the last exception_ptr's release, the end of
// its last handler), its storage is freed with free() when the destructor returns: a tvar member's
// destruction must not wait for a commit (weft::detail::exception_storage_dying, stm_core.hpp).
struct exception_storage_dies {
  bool outer = weft::detail::exception_storage_dying;
  exception_storage_dies() { weft::detail::exception_storage_dying = true; }
  ~exception_storage_dies() { weft::detail::exception_storage_dying = outer; }
  exception_storage_dies(const exception_storage_dies&) = delete;
  exception_storage_dies& operator=(const exception_storage_dies&) = delete;
};

void wrap_exception_ptr_release(std::exception_ptr* self) noexcept {
  weft::detail::observe_scheduler();
  exception_storage_dies dying;
  real_exception_ptr_release(self);
}

// An exception object from its allocation to its throw (or its free, when its constructor threw, or
// an exception_ptr's hold of it): see exception_being_made (ordered.hpp).
extern "C" void* __real___cxa_allocate_exception(std::size_t size) noexcept;
extern "C" void __real___cxa_free_exception(void* object) noexcept;
extern "C" [[noreturn]] void __real___cxa_throw(void* object, std::type_info* type, void (*destructor)(void*));

// Each of these wraps also reports the object to the speculative segment running on this thread, if
// any (ordered_exception_*): a rollback frees those it was making, throwing or destroying, which only
// the C++ runtime's frames knew.
extern "C" void* __wrap___cxa_allocate_exception(std::size_t size) noexcept {
  weft::detail::ordered_before_exception_allocation();
  weft::detail::exception_being_made = true;
  void* object = __real___cxa_allocate_exception(size);
  weft::detail::ordered_exception_made(object, size);
  return object;
}

extern "C" void __wrap___cxa_free_exception(void* object) noexcept {
  weft::detail::exception_being_made = false;
  weft::detail::ordered_exception_gone(object);
  __real___cxa_free_exception(object);
}

// std::make_exception_ptr (inline in the program) allocates the object, initialises its header here,
// constructs it, and hands it to exception_ptr's constructor, which counts the reference inside
// libstdc++ (not through _M_addref's wrap). Rolled back after that, an attempt forgot the
// exception_ptr with its stack and the object was never destroyed (ASan at 2 workers with
// injection; "std::make_exception_ptr in a rolled-back attempt ..." counts them). So the call waits
// for the tasklet's turn here, before anything but the raw memory exists, as current_exception()
// does; a rollback meanwhile frees that memory (reported made at its allocation).
extern "C" __cxxabiv1::__cxa_refcounted_exception* __real___cxa_init_primary_exception(void* object, std::type_info* type,
                                                                                       void (*destructor)(void*)) noexcept;
extern "C" __cxxabiv1::__cxa_refcounted_exception* __wrap___cxa_init_primary_exception(void* object, std::type_info* type,
                                                                                       void (*destructor)(void*)) noexcept {
  weft::detail::observe_scheduler();
  weft::detail::exception_being_made = false;  // inevitable from here: nothing can stop the segment
  return __real___cxa_init_primary_exception(object, type, destructor);
}

extern "C" [[noreturn]] void __wrap___cxa_throw(void* object, std::type_info* type, void (*destructor)(void*)) {
  weft::detail::exception_being_made = false;  // in flight from here: std::uncaught_exceptions() counts it
  weft::detail::ordered_exception_thrown(object);
  __real___cxa_throw(object, type, destructor);
}

// `throw;`: the innermost caught exception is in flight again (it stays on the caught list, its
// handler count negative, until the unwinding leaves its handler).
extern "C" [[noreturn]] void __real___cxa_rethrow();
extern "C" [[noreturn]] void __wrap___cxa_rethrow() {
  weft::detail::ordered_exception_thrown(weft::detail::context_top_caught_object());
  __real___cxa_rethrow();
}

// A handler begins: the exception is on the caught list now (context_discard_catches frees it if the
// attempt is rolled back inside the handler).
extern "C" void* __real___cxa_begin_catch(void* unwind_header) noexcept;
extern "C" void* __wrap___cxa_begin_catch(void* unwind_header) noexcept {
  void* adjusted = __real___cxa_begin_catch(unwind_header);
  weft::detail::ordered_exception_caught(weft::detail::context_top_caught_object());
  return adjusted;
}

// The end of a catch handler: when it was the exception's last handler, __cxa_end_catch takes the
// object off the thread's caught list and destroys it (its destructor frees memory: a
// std::runtime_error's message) before freeing it. In between, the object is neither caught nor in
// flight and only this call knows it: a doomed segment stopped at that delete leaked it (ASan, 4 of 20
// runs of "on_abort hooks of an undone nested block ..." at 2 workers, 144 bytes from
// __cxa_allocate_exception and nothing else: the message it held was the attempt's and went with
// the rollback). So the call is marked as the making of one is.
extern "C" void __real___cxa_end_catch();
extern "C" void __wrap___cxa_end_catch() {
  struct mark {
    bool outer = weft::detail::exception_being_made;
    void* dying = weft::detail::context_end_catch_frees();
    void* outer_dying = nullptr;  // an exception destroyed around this one (a catch in its destructor)
    mark() {
      weft::detail::exception_being_made = true;
      if (dying) outer_dying = weft::detail::ordered_exception_dying(dying);  // a rollback in its destructor frees it
    }
    ~mark() {
      weft::detail::exception_being_made = outer;
      if (dying) {
        weft::detail::ordered_exception_dying(outer_dying);
        weft::detail::ordered_exception_gone(dying);  // freed
      }
    }
  } marked;
  exception_storage_dies storage;
  __real___cxa_end_catch();
}

// std::rethrow_exception raises the object's reference count and makes a dependent exception
// inside libstdc++, where no wrap sees it: rolled back after that (its by-value argument's release
// on the way out waited for the head, and a conflict found there rolled it back), the count stayed
// one too high and the exception was never destroyed (its destructor's output missing from a
// program's, at 2 workers). It waits for the tasklet's turn first. (A by-value class argument is
// passed by address, Itanium C++ ABI 3.1.2.3: the wrap passes the caller's own argument on.)
[[noreturn]] void real_rethrow_exception(std::exception_ptr* e) __asm__("__real__ZSt17rethrow_exceptionNSt15__exception_ptr13exception_ptrE");
[[noreturn]] void wrap_rethrow_exception(std::exception_ptr* e) __asm__("__wrap__ZSt17rethrow_exceptionNSt15__exception_ptr13exception_ptrE");
void wrap_rethrow_exception(std::exception_ptr* e) {
  weft::detail::observe_scheduler();
  real_rethrow_exception(e);
}

std::exception_ptr wrap_current_exception() noexcept __asm__("__wrap__ZSt17current_exceptionv");
std::exception_ptr wrap_current_exception() noexcept {
  weft::detail::observe_scheduler();
  return real_current_exception();
}
