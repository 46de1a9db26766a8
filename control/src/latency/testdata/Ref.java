// Generates the HdrHistogram reference outputs in this directory (expected text of the unit
// tests in ../format.rs) with the Java reference implementation:
//
//   apt-get install libhdrhistogram-java          # HdrHistogram 2.1.11 on Debian 12
//   javac -cp /usr/share/java/hdrhistogram.jar Ref.java
//   for w in uniform skew; do java -cp /usr/share/java/hdrhistogram.jar:. Ref $w; done
//
// uniform: 1..=10000 µs recorded in ns; skew: 1000 × 100 µs and one 50 ms.
import org.HdrHistogram.Histogram;
import java.io.FileOutputStream;
import java.io.PrintStream;

public class Ref {
    public static void main(String[] args) throws Exception {
        String which = args[0];
        Histogram h = new Histogram(1L, 60_000_000_000L, 3);
        if (which.equals("uniform")) {
            for (long us = 1; us <= 10000; us++) h.recordValue(us * 1000);
        } else if (which.equals("skew")) {
            for (int i = 0; i < 1000; i++) h.recordValue(100_000);
            h.recordValue(50_000_000);
        }
        try (PrintStream ps = new PrintStream(new FileOutputStream(which + ".percentiles.csv"))) {
            h.outputPercentileDistribution(ps, 5, 1000.0, true);
        }
        try (PrintStream ps = new PrintStream(new FileOutputStream(which + ".hgrm"))) {
            h.outputPercentileDistribution(ps, 5, 1000.0, false);
        }
        try (PrintStream ps = new PrintStream(new FileOutputStream(which + ".t1.csv"))) {
            h.outputPercentileDistribution(ps, 1, 1.0, true);
        }
    }
}
