// Minimal SLF4J 1.7 binding for the Java compatibility client: prints kafka-clients log
// messages at or above $COMPAT_JAVA_LOG_LEVEL (default WARN) to stderr, so that broker-side
// problems (unexpected error codes, disconnects, parse failures) show up in the client log.
// The PyPI wheel the jars come from ships slf4j-api without any binding.
package org.slf4j.impl;

import java.lang.reflect.Proxy;
import java.time.LocalTime;
import java.util.concurrent.ConcurrentHashMap;

import org.slf4j.ILoggerFactory;
import org.slf4j.Logger;
import org.slf4j.helpers.FormattingTuple;
import org.slf4j.helpers.MessageFormatter;
import org.slf4j.spi.LoggerFactoryBinder;

public class StaticLoggerBinder implements LoggerFactoryBinder {
    public static String REQUESTED_API_VERSION = "1.7.36";
    private static final StaticLoggerBinder SINGLETON = new StaticLoggerBinder();
    private static final String[] LEVELS = {"trace", "debug", "info", "warn", "error"};
    private static final int THRESHOLD = level(System.getenv().getOrDefault("COMPAT_JAVA_LOG_LEVEL", "warn"));

    public static StaticLoggerBinder getSingleton() {
        return SINGLETON;
    }

    private static int level(String name) {
        for (int i = 0; i < LEVELS.length; i++) {
            if (LEVELS[i].equalsIgnoreCase(name)) return i;
        }
        return 3;
    }

    private final ConcurrentHashMap<String, Logger> loggers = new ConcurrentHashMap<>();

    private final ILoggerFactory factory = name -> loggers.computeIfAbsent(name, StaticLoggerBinder::create);

    private static Logger create(String name) {
        String shortName = name.substring(name.lastIndexOf('.') + 1);
        return (Logger) Proxy.newProxyInstance(Logger.class.getClassLoader(), new Class<?>[] {Logger.class},
            (proxy, method, args) -> {
                String m = method.getName();
                if (m.equals("getName")) return name;
                if (m.equals("toString")) return "StderrLogger(" + name + ")";
                if (m.equals("hashCode")) return System.identityHashCode(proxy);
                if (m.equals("equals")) return proxy == args[0];
                if (m.startsWith("is") && m.endsWith("Enabled")) {
                    return level(m.substring(2, m.length() - 7)) >= THRESHOLD;
                }
                int lvl = level(m);
                if (lvl < THRESHOLD || args == null || args.length == 0) return null;
                int i = 0;
                if (args[0] instanceof org.slf4j.Marker) i = 1; // ignore markers
                if (i >= args.length) return null;
                String fmt = String.valueOf(args[i]);
                Object[] rest = new Object[args.length - i - 1];
                System.arraycopy(args, i + 1, rest, 0, rest.length);
                if (rest.length == 1 && rest[0] instanceof Object[]) rest = (Object[]) rest[0];
                FormattingTuple ft = MessageFormatter.arrayFormat(fmt, rest);
                Throwable t = ft.getThrowable();
                if (t == null && rest.length > 0 && rest[rest.length - 1] instanceof Throwable) {
                    t = (Throwable) rest[rest.length - 1];
                }
                StringBuilder sb = new StringBuilder();
                sb.append(LocalTime.now()).append(" java ").append(m.toUpperCase()).append(' ')
                  .append(shortName).append(": ").append(ft.getMessage());
                if (t != null) sb.append(" [").append(t).append(']');
                System.err.println(sb);
                return null;
            });
    }

    @Override
    public ILoggerFactory getLoggerFactory() {
        return factory;
    }

    @Override
    public String getLoggerFactoryClassStr() {
        return StaticLoggerBinder.class.getName();
    }
}
