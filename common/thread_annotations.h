// Clang thread-safety annotations: checked by -Wthread-safety under clang
// (the thread-safety build, scripts/check_thread_safety.sh), documentation
// under gcc. Use them with megabatch::Mutex (common/mutex.h); std::mutex
// carries no capability and is not checked.
#ifndef MEGABATCH_COMMON_THREAD_ANNOTATIONS_H_
#define MEGABATCH_COMMON_THREAD_ANNOTATIONS_H_

#if defined(__clang__)
#define MEGABATCH_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define MEGABATCH_THREAD_ANNOTATION(x)
#endif

// gRPC's abseil may define some of the same names with the same meaning.
#ifndef CAPABILITY
#define CAPABILITY(x) MEGABATCH_THREAD_ANNOTATION(capability(x))
#endif
#ifndef SCOPED_CAPABILITY
#define SCOPED_CAPABILITY MEGABATCH_THREAD_ANNOTATION(scoped_lockable)
#endif
#ifndef GUARDED_BY
#define GUARDED_BY(x) MEGABATCH_THREAD_ANNOTATION(guarded_by(x))
#endif
#ifndef PT_GUARDED_BY
#define PT_GUARDED_BY(x) MEGABATCH_THREAD_ANNOTATION(pt_guarded_by(x))
#endif
#ifndef REQUIRES
#define REQUIRES(...) \
  MEGABATCH_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#endif
#ifndef EXCLUDES
#define EXCLUDES(...) MEGABATCH_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#endif
#ifndef ACQUIRE
#define ACQUIRE(...) \
  MEGABATCH_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#endif
#ifndef RELEASE
#define RELEASE(...) \
  MEGABATCH_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#endif
#ifndef ASSERT_CAPABILITY
#define ASSERT_CAPABILITY(x) MEGABATCH_THREAD_ANNOTATION(assert_capability(x))
#endif
#ifndef NO_THREAD_SAFETY_ANALYSIS
#define NO_THREAD_SAFETY_ANALYSIS \
  MEGABATCH_THREAD_ANNOTATION(no_thread_safety_analysis)
#endif

#endif  // MEGABATCH_COMMON_THREAD_ANNOTATIONS_H_
