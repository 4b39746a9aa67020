// Picks the platform's implementations at compile time: framed TCP and
// dart:io files on Android/iOS/desktop, WebSocket + HTTP in the browser.
export 'platform_stub.dart'
    if (dart.library.io) 'platform_native.dart'
    if (dart.library.js_interop) 'platform_web.dart';
