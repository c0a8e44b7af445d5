// HAPI FHIR R4 (4.0.1) validation of JSON resources, offline: the R4 definitions and value
// sets bundled in hapi-fhir-validation-resources-r4, no terminology server. Run by
// tests/fhir/hapi.py with Java's single-file source launcher:
//   java -cp '<libs>/*' FhirValidate.java FILE.json...
// Prints one line per message: <file>\t<SEVERITY>\t<location>\t<message>, then "done".
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class FhirValidate {
    public static void main(String[] args) throws Exception {
        FhirContext ctx = FhirContext.forR4();
        ValidationSupportChain chain = new ValidationSupportChain(
                new DefaultProfileValidationSupport(ctx),
                new CommonCodeSystemsTerminologyService(ctx),
                new InMemoryTerminologyServerValidationSupport(ctx),
                new SnapshotGeneratingValidationSupport(ctx));
        FhirInstanceValidator module = new FhirInstanceValidator(chain);
        module.setNoTerminologyChecks(false);
        FhirValidator validator = ctx.newValidator().registerValidatorModule(module);
        for (String file : args) {
            String text = Files.readString(Path.of(file));
            ValidationResult result = validator.validateWithResult(text);
            for (SingleValidationMessage m : result.getMessages()) {
                System.out.println(file + "\t" + m.getSeverity() + "\t" + m.getLocationString()
                        + "\t" + m.getMessage().replace('\n', ' ').replace('\t', ' '));
            }
        }
        System.out.println("done");
    }
}
