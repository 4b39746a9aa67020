// Finds the web links in a message so they can be tapped.

/// A piece of a message: plain text, or a link with the URL it opens.
class TextPiece {
  const TextPiece(this.text, [this.url]);

  final String text;

  /// Null for plain text.
  final Uri? url;

  bool get isLink => url != null;

  @override
  bool operator ==(Object other) => other is TextPiece && other.text == text && other.url == url;

  @override
  int get hashCode => Object.hash(text, url);

  @override
  String toString() => isLink ? 'link($text)' : 'text($text)';
}

// http(s)://… or www.…, up to white space. Trailing punctuation that usually
// ends the sentence rather than the link is given back below.
final RegExp _link = RegExp(r'(?:https?://|www\.)[^\s<>"]+', caseSensitive: false);
const String _trailing = '.,;:!?\'"';

/// Splits [text] into plain pieces and link pieces, in order; joined they
/// give [text] back unchanged.
List<TextPiece> splitLinks(String text) {
  final pieces = <TextPiece>[];
  var at = 0;
  for (final match in _link.allMatches(text)) {
    var end = match.end;
    while (end > match.start && _endsOutside(text, match.start, end)) {
      end--;
    }
    final candidate = text.substring(match.start, end);
    final url = _urlOf(candidate);
    if (url == null) continue;
    if (match.start > at) pieces.add(TextPiece(text.substring(at, match.start)));
    pieces.add(TextPiece(candidate, url));
    at = end;
  }
  if (at < text.length) pieces.add(TextPiece(text.substring(at)));
  return pieces;
}

/// Whether the last character of text[start, end) belongs to the sentence:
/// punctuation, or a closing bracket the link did not open.
bool _endsOutside(String text, int start, int end) {
  final last = text[end - 1];
  if (_trailing.contains(last)) return true;
  if (last == ')') {
    final inside = text.substring(start, end);
    return '('.allMatches(inside).length < ')'.allMatches(inside).length;
  }
  return false;
}

Uri? _urlOf(String candidate) {
  final withScheme = candidate.toLowerCase().startsWith('www.') ? 'http://$candidate' : candidate;
  final uri = Uri.tryParse(withScheme);
  if (uri == null || uri.host.isEmpty) return null;
  return uri;
}
