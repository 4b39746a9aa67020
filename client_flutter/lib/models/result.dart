// Errors as values: a function that can fail returns a Result instead of
// throwing across layers, and callers `switch` over it exhaustively.

sealed class Result<T> {
  const Result();
}

final class Ok<T> extends Result<T> {
  const Ok(this.value);

  final T value;

  @override
  String toString() => 'Ok($value)';
}

final class Err<T> extends Result<T> {
  const Err(this.error);

  final AppError error;

  @override
  String toString() => 'Err($error)';
}

/// An error worth showing: a stable [code] (a PROTOCOL.md §6 code when the
/// server sent it, else a client-side one) and a sentence for people.
class AppError {
  const AppError(this.code, this.message);

  final String code;
  final String message;

  @override
  String toString() => '$code: $message';
}
