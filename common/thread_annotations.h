// Clang thread-safety annotations (checked by -Wthread-safety under clang,
// documentation under gcc).
#ifndef MEGABATCH_COMMON_THREAD_ANNOTATIONS_H_
#define MEGABATCH_COMMON_THREAD_ANNOTATIONS_H_

#if defined(__clang__)
#define MEGABATCH_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define MEGABATCH_THREAD_ANNOTATION(x)
#endif

// gRPC's abseil may define the same names with the same meaning.
#ifndef GUARDED_BY
#define GUARDED_BY(x) MEGABATCH_THREAD_ANNOTATION(guarded_by(x))
#endif
#ifndef REQUIRES
#define REQUIRES(...) MEGABATCH_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#endif
#ifndef EXCLUDES
#define EXCLUDES(...) MEGABATCH_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#endif

#endif  // MEGABATCH_COMMON_THREAD_ANNOTATIONS_H_
