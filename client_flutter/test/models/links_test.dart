import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/links.dart';

void main() {
  test('finds http, https and www links; the rest stays plain text', () {
    expect(splitLinks('see https://example.org/a?b=1 and www.lan.test now'), [
      const TextPiece('see '),
      TextPiece('https://example.org/a?b=1', Uri.parse('https://example.org/a?b=1')),
      const TextPiece(' and '),
      TextPiece('www.lan.test', Uri.parse('http://www.lan.test')),
      const TextPiece(' now'),
    ]);
  });

  test('punctuation that ends the sentence is not part of the link', () {
    final pieces = splitLinks('Go to http://10.0.0.2:5555/, then (http://x.test/a_(b)) ok!');
    final links = [for (final p in pieces) if (p.isLink) p.text];
    expect(links, ['http://10.0.0.2:5555/', 'http://x.test/a_(b)']);
    expect(pieces.map((p) => p.text).join(), 'Go to http://10.0.0.2:5555/, then (http://x.test/a_(b)) ok!');
  });

  test('text without links is one plain piece; an empty text none', () {
    expect(splitLinks('hello there'), [const TextPiece('hello there')]);
    expect(splitLinks(''), isEmpty);
    expect(splitLinks('http://'), [const TextPiece('http://')], reason: 'no host: not a link');
  });
}
