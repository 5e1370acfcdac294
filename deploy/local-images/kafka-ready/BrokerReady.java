// The local Kafka image's stand-in for kafka-broker-api-versions.sh (kafka-tools is not on Maven Central):
// exit 0 once the broker at --bootstrap-server answers a metadata request, 1 otherwise. --command-config FILE: the
// client's properties (security.protocol, ssl.*, sasl.*), as the real tool takes them.
import java.io.FileInputStream;
import java.io.InputStream;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class BrokerReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = "localhost:9092";
        String commandConfig = null;
        for (int i = 0; i < args.length - 1; i++) {
            if (args[i].equals("--bootstrap-server")) bootstrap = args[i + 1];
            if (args[i].equals("--command-config")) commandConfig = args[i + 1];
        }
        Properties props = new Properties();
        if (commandConfig != null) {
            try (InputStream in = new FileInputStream(commandConfig)) {
                props.load(in);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "8000");
        try (Admin admin = Admin.create(props)) {
            int nodes = admin.describeCluster().nodes().get(10, TimeUnit.SECONDS).size();
            System.out.println(bootstrap + ": " + nodes + " broker(s) answer");
        } catch (Exception e) {
            System.err.println(bootstrap + ": " + e);
            System.exit(1);
        }
    }
}
